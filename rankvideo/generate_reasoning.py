"""``python -m rankvideo.generate_reasoning``: the reference's command, kept as typed; the code is
:mod:`rankvideo.generation.teacher_labels`."""
from rankvideo.generation.teacher_labels import main

if __name__ == "__main__":
    raise SystemExit(main())
