"""Which int8 kernel W8A8 should use on this CPU: torch's quantized engine (`torch.ops.quantized.linear_dynamic`,
fbgemm/x86, prepacked int8 weights) vs torchao's `Int8DynamicActivationInt8WeightConfig` (eager, if torchao is
installed), each as a speedup over fp32 `nn.Linear` for single layers at batch 1 and 8.

    python benchmarks/bench_int8_kernels.py        # pip install torchao --no-deps to include it
"""

import time
import warnings

import torch


def seconds(layer, x: torch.Tensor, repeats: int = 100) -> float:
    """Mean time of `layer(x)` after a warm-up."""
    with torch.no_grad():
        for _ in range(10):
            layer(x)
        start = time.perf_counter()
        for _ in range(repeats):
            layer(x)
    return (time.perf_counter() - start) / repeats


def quantized_engine(linear: torch.nn.Linear):
    weight = linear.weight.detach()
    scale = weight.abs().amax(1) / 127
    codes = torch.round(weight / scale[:, None]).to(torch.int8)
    zeros = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch._make_per_channel_quantized_tensor(codes, scale.double(), zeros, 0)
        packed = torch.ops.quantized.linear_prepack(quantized, linear.bias.detach())
    return lambda x: torch.ops.quantized.linear_dynamic(x, packed, True)


def torchao_layer(linear: torch.nn.Linear):
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        return None
    wrapper = torch.nn.Sequential(torch.nn.Linear(linear.in_features, linear.out_features)).eval()
    wrapper[0].load_state_dict(linear.state_dict())
    quantize_(wrapper, Int8DynamicActivationInt8WeightConfig())
    return wrapper


def main() -> None:
    print(f"{'layer':<12}{'batch':>6}{'fp32 us':>9}{'quantized engine':>18}{'torchao':>9}")
    for in_features, out_features in ((128, 512), (768, 3072), (3072, 768), (4096, 8192)):
        linear = torch.nn.Linear(in_features, out_features).eval()
        engine, tao = quantized_engine(linear), torchao_layer(linear)
        for batch in (1, 8):
            x = torch.randn(batch, in_features)
            reference = seconds(linear, x)
            engine_speedup = reference / seconds(engine, x)
            tao_speedup = f"{reference / seconds(tao, x):.2f}x" if tao is not None else "n/a"
            print(
                f"{in_features}->{out_features:<6}{batch:>6}{reference * 1e6:>9.0f}{engine_speedup:>17.2f}x"
                f"{tao_speedup:>9}"
            )


if __name__ == "__main__":
    main()
