"""``python -m rankvideo.train_perception``: the reference's command, kept as typed; the code is
:mod:`rankvideo.training.stage1`."""
from rankvideo.training.stage1 import main

if __name__ == "__main__":
    raise SystemExit(main())
