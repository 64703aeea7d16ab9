"""``python -m rankvideo.generate_captions``: the reference's command, kept as typed; the code is
:mod:`rankvideo.generation.captions`."""
from rankvideo.generation.captions import main

if __name__ == "__main__":
    raise SystemExit(main())
