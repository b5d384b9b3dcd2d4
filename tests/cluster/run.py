"""`make cluster`: the full test control plane in the foreground, with crds/*.yaml applied. Prints
one line, `export KUBECONFIG=<path>`, once everything is ready; Ctrl-C or SIGTERM tears it down."""

import signal
import sys
import time

from tests.cluster.build import BuildError
from tests.cluster.controlplane import ControlPlane
from tests.cluster.fixtures import OUR_CRDS
from tests.cluster.process import ComponentError


def main() -> int:
    # SIGTERM as Ctrl-C: both unwind through `finally`, which stops every process.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    plane, keep = ControlPlane(crds=OUR_CRDS), False
    try:
        plane.start()
        seconds = ", ".join(f"{k} {v:.1f} s" for k, v in plane.startup_seconds.items())
        print(f"control plane ready ({seconds}); logs in {plane.logs}", file=sys.stderr)
        print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
        while True:
            plane.check()
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    except (ComponentError, BuildError) as error:
        print(error, file=sys.stderr)
        keep = True  # the error names a log in the folder
        return 1
    finally:
        plane.stop(keep=keep)


if __name__ == "__main__":
    sys.exit(main())
