"""``python -m rankvideo.rerank``: the reference's command, kept as typed; the code is
:mod:`rankvideo.scoring.rerank`."""
from rankvideo.scoring.rerank import main

if __name__ == "__main__":
    raise SystemExit(main(exit_at_once=True))
