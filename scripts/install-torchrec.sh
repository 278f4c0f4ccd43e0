#!/usr/bin/env bash
# Install TorchRec + FBGEMM for strategy=torchrec, matched to the torch already installed.
#
#   bash scripts/install-torchrec.sh            # into the python on PATH (e.g. an activated .venv)
#   PYTHON=.venv/bin/python bash scripts/install-torchrec.sh
#
# Why a script and not an extra of pyproject.toml: FBGEMM's compiled ops are built against one
# torch minor version (fbgemm 1.8 <-> torch 2.13, fbgemm 1.9 <-> torch 2.14; any other pair fails at
# `import fbgemm_gpu` with an undefined symbol), and torchrec's metadata pins torchmetrics==1.0.3 and
# pulls the CUDA fbgemm-gpu, which would overwrite the CPU one. So torchrec and fbgemm are installed
# with --no-deps, with torch held at its installed version, and then the few packages torchrec really
# imports (tensordict, tqdm, pyre-extensions). torchrec.metrics is never imported, so the project's
# torchmetrics stays.
set -euo pipefail
PYTHON="${PYTHON:-python}"

read -r TORCH_VERSION CUDA_VERSION < <("$PYTHON" -c \
  "import torch; print(torch.__version__.split('+')[0], torch.version.cuda or 'cpu')")
MINOR="${TORCH_VERSION%.*}"

# torch minor version, build -> fbgemm package and version, torchrec version
case "$MINOR/$CUDA_VERSION" in
  2.13/cpu) FBGEMM="fbgemm-gpu-cpu==1.8.0"; TORCHREC="torchrec==1.8.0" ;;
  2.13/*)   FBGEMM="fbgemm-gpu==1.8.0";     TORCHREC="torchrec==1.8.0" ;;
  2.14/cpu) FBGEMM="fbgemm-gpu-cpu==1.9.0"; TORCHREC="torchrec==1.9.2" ;;
  2.14/*)   FBGEMM="fbgemm-gpu==1.9.0";     TORCHREC="torchrec==1.9.2" ;;
  *)
    echo "error: no known TorchRec/FBGEMM set for torch $TORCH_VERSION (cuda: $CUDA_VERSION)" \
         "(scripts/install-torchrec.sh): install torch 2.13 (CPU: pip install torch==2.13.0) or 2.14 (CUDA) first" >&2
    exit 2 ;;
esac

echo "torch $TORCH_VERSION ($CUDA_VERSION): installing $FBGEMM $TORCHREC"
HOLD="torch==$("$PYTHON" -c 'import torch; print(torch.__version__)')"
"$PYTHON" -m pip install --quiet "$HOLD" tensordict tqdm pyre-extensions
# pip then reports that torchrec "requires torchmetrics==1.0.3" and "fbgemm-gpu": expected, see above.
"$PYTHON" -m pip install --quiet --no-deps "$FBGEMM" "$TORCHREC"
"$PYTHON" -c "import fbgemm_gpu, torchrec; print('torchrec', torchrec.__version__, 'and fbgemm_gpu', fbgemm_gpu.__version__, 'import')"
