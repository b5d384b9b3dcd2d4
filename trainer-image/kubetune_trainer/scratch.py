"""What the trainer's writes to the scratch volume need: the bytes of the tensors it saves. The
room check itself (room_for, NoSpace) is kubetune.storage's, which downloads there too."""


def tensor_bytes(obj) -> int:
    """The bytes of every tensor in obj (nested dicts, lists): what saving it takes, at least."""
    import torch  # here: a module that needs no torch to import

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0
