"""``python -m rankvideo.evaluate``: the reference's command, kept as typed; the code is
:mod:`rankvideo.evaluation.evaluate`."""
from rankvideo.evaluation.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
