#!/usr/bin/env python3
# onnx-check.py: test helper of test-onnx-peers.c. Checks each ONNX file given with
# onnx.checker.check_model(full_check=True) (Debian's python3-onnx) and prints one JSON
# line per file: opset, IR version, operators, metadata, and the input and output
# shapes after ONNX's own shape inference. Exit 77 when python3-onnx is missing, 1 when
# a check fails (the checker's message on stderr).
import json
import sys

try:
    import onnx
    from onnx import shape_inference
except ImportError:
    print("python3-onnx is not installed", file=sys.stderr)
    sys.exit(77)


def dims(value_info):
    return [d.dim_param if d.dim_param else d.dim_value
            for d in value_info.type.tensor_type.shape.dim]


for path in sys.argv[1:]:
    model = onnx.load(path)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # the checker's own exception types vary between versions
        print(f"{path}: {e}", file=sys.stderr)
        sys.exit(1)
    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    print(json.dumps({
        "path": path,
        "ir_version": model.ir_version,
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "ops": [n.op_type for n in model.graph.node],
        "metadata": {p.key: p.value for p in model.metadata_props},
        "producer": model.producer_name,
        "input": dims(inferred.graph.input[0]),
        "output": dims(inferred.graph.output[0]),
    }))
