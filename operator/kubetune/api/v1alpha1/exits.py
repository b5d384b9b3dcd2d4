"""The trainer's exit codes: a contract between the trainer image, the training job's restart
policy and the operator (docs/trainer-config.md). The Training Operator's `ExitCode` policy
fails the job on 1-127 and recreates the pod on 128-255, so permanent errors sit below 128.
"""

from enum import IntEnum

# Kubernetes keeps at most 4096 bytes of a container's termination message.
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT = 4096


class ExitCode(IntEnum):
    SUCCEEDED = 0
    # Permanent: a retry would fail the same way.
    TRAINER_ERROR = 1  # an unexpected error in the trainer (a bug): the log has the traceback
    USER_ERROR = 2  # config, data, model, output or storage refused: fix the input
    RETRIES_EXHAUSTED = 3  # started more than runPolicy.backoffLimit + 1 times
    # Retryable: the same run may succeed on a new pod, resuming from its last checkpoint.
    INFRASTRUCTURE = 200  # storage unreachable past the trainer's patience, a peer lost
    # 128 + N: ended by signal N, e.g. 137 (SIGKILL, the OOM killer), 143 (SIGTERM, preempted)


def retryable(code: int) -> bool:
    return code >= 128


REASONS = {  # FineTuneJob condition reason of a job that failed with the code
    ExitCode.TRAINER_ERROR: "TrainerError",
    ExitCode.USER_ERROR: "InvalidInput",
    ExitCode.RETRIES_EXHAUSTED: "BackoffLimitExceeded",
}
