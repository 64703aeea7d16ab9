"""``python -m rankvideo.train_reranker``: the reference's command, kept as typed; the code is
:mod:`rankvideo.training.stage2`."""
from rankvideo.training.stage2 import main

if __name__ == "__main__":
    raise SystemExit(main())
