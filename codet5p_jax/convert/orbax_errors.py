"""Failed orbax / TensorStore reads reported as one line, without the noise around them.

Shared by every orbax reader (the training checkpointer and the params-only directories).
"""

import sys


def error_summary(e: BaseException) -> str:
    """The root cause of an orbax/TensorStore read error on one line.

    TensorStore wraps the real reason (`OUT_OF_RANGE: Error reading "x/0.0" ... not valid for
    value of size N`) in an exception whose text is a 60-line spec dump, or appends its spec as
    `[tensorstore_spec='...']`; both are dropped.
    """
    seen = set()
    while id(e) not in seen and (e.__cause__ or e.__context__) is not None:
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    text = str(e).split("See full TensorStore details")[0].split(" [tensorstore_spec=")[0]
    return " ".join(text.split())[:600] or type(e).__name__


def quiet_closed_event_loop() -> None:
    """Drops the `RuntimeError: Event loop is closed` reports of a failed orbax read.

    orbax runs a read on a fresh event loop and closes it as soon as one array fails; TensorStore
    then completes the other pending reads of that item and each completion callback raises on the
    closed loop, printed through `sys.unraisablehook` (two to forty tracebacks, also at exit).
    Installed before each read (the callbacks may fire before the failure reaches us); it drops
    exactly those reports.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_codet5p_quiet_loop", False):
        return

    def hook(unraisable):
        e = unraisable.exc_value
        if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
            return
        previous(unraisable)

    hook._codet5p_quiet_loop = True
    sys.unraisablehook = hook
