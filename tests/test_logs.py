"""rankvideo.logs: one line per event in a step's log file: progress as periodic log lines (no
progress-bar frames), no per-video chatter from qwen_vl_utils, no Hugging Face bars; a bar on a
terminal."""

from __future__ import annotations

import io
import logging
import math
import subprocess
import sys

import qwen_vl_utils.vision_process
from tqdm import tqdm

from rankvideo import logs


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_step_log_has_lines_not_frames_and_no_library_chatter(tmp_path):
    path = tmp_path / "step.log"
    with logs.to_file(path):
        for _ in logs.progress(range(1000), desc="work", unit="item", every_s=math.inf):
            pass
        bar = logs.progress(total=50, initial=10, desc="score", unit="video", every_s=math.inf)
        for _ in range(40):
            bar.update(1)
            bar.set_postfix(failed=0)
        bar.close()
        bar.close()  # a second close adds nothing
        # qwen_vl_utils logs every decoded video at INFO; its warnings stay
        qwen_vl_utils.vision_process.logger.info("decord:  video_path='v0001.mp4', total_frames=8")
        qwen_vl_utils.vision_process.logger.warning("smart_nframes: nframes[9] > total_frames[8]")
        # the bars transformers draws itself ("Loading weights", "Writing model shards")
        from transformers.utils import logging as hf_logging

        for _ in hf_logging.tqdm(range(100), desc="Loading weights"):
            pass
        logging.getLogger("rankvideo.test").info("done")
    text = path.read_text()
    assert "\r" not in text
    work = [line for line in text.splitlines() if " work: " in line]
    # a line at each tenth of the loop, the last one not repeated by close()
    assert [line.split(" work: ")[1].split(",")[0] for line in work] == [f"{100 * k}/1000 item ({10 * k}%)"
                                                                       for k in range(1, 11)]
    score = [line.split(" score: ")[1] for line in text.splitlines() if " score: " in line]
    assert len(score) == 8 and score[0].startswith("15/50 video (30%)") and score[-1].startswith("50/50 video (100%)")
    assert score[-1].endswith("failed=0")
    assert "decord" not in text and "smart_nframes" in text
    assert "Loading weights" not in text
    assert text.rstrip().endswith("rankvideo.test: done")


def test_progress_logs_after_a_quiet_interval(tmp_path):
    path = tmp_path / "step.log"
    with logs.to_file(path):
        bar = logs.progress(total=10**6, desc="slow", unit="pair", every_s=0)
        for _ in range(3):
            bar.update(1)
        bar.close()
    lines = [line for line in path.read_text().splitlines() if " slow: " in line]
    assert [line.split(" slow: ")[1].split(",")[0] for line in lines] == ["1/1000000 pair (0%)", "2/1000000 pair (0%)",
                                                                          "3/1000000 pair (0%)"]


def test_disabled_progress_says_nothing(tmp_path):
    path = tmp_path / "step.log"
    with logs.to_file(path):
        for _ in logs.progress(range(100), desc="quiet", enabled=False):
            pass
    assert "quiet" not in path.read_text()


def test_terminal_gets_a_bar(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = logs.progress(total=3, desc="live", unit="video")
    assert isinstance(bar, tqdm)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert "\r" in terminal.getvalue() and "live" in terminal.getvalue()


def test_trainer_draws_no_bar_into_a_log_file(tmp_path):
    from rankvideo.training.common import TrainSettings, training_arguments

    settings = TrainSettings.from_config({}, 0)
    with logs.to_file(tmp_path / "train.log"):
        assert training_arguments(settings, tmp_path / "ckpt").disable_tqdm


def test_command_line_loop_in_a_pipe_logs_lines(tmp_path):
    """The synthetic benchmark's render loop, stderr a file as in a rule or a batch job."""
    config = tmp_path / "synthetic.yaml"
    config.write_text("n_videos: 12\nn_test_queries: 2\nn_train_queries: 2\nn_perception_videos: 0\n")
    with open(tmp_path / "stderr.log", "w") as stderr:
        subprocess.run([sys.executable, "-m", "rankvideo.demo.synthetic", "--output", str(tmp_path / "bench"), "--config",
                        str(config)], stderr=stderr, check=True)
    text = (tmp_path / "stderr.log").read_text()
    assert "\r" not in text
    assert ": render videos: 12/12 video (100%)" in text
