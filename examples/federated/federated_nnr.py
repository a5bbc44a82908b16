# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Federated averaging whose updates travel as NNR bitstreams.

Simulated clients train a small numpy MLP on their own synthetic data (each client sees a skewed
mix of the classes). Every round:

1. each client trains from the current global model and sends its model as an NNR *update* of
   that global model (`nnc.encode_update`: only the quantized differences, bound to the global
   model by the parents' payload SHA-256);
2. the server averages the updates, weighted by the clients' sample counts, into one update of
   the same base (`nnrconv.merge`, what `nnrconv merge BASE U1 U2 ... OUT --weights ...` does);
3. the server broadcasts that one update; everyone applies it to the chain of models they hold
   (`nnc.read_chain`: round 0's full model, then each round's merged update).

It prints, per round, the accuracy of the global model and the bytes that travelled, against
plain float32 updates. This file needs only nnrconv and numpy; `flower_nnr.py` runs the same
federation with Flower's server loop and strategy API. When Flower is importable, this loop too
checks its average against Flower's FedAvg arithmetic (`flwr.server.strategy.aggregate`).

Run: python examples/federated/federated_nnr.py [--rounds 5] [--clients 8]
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import nnrconv
from nnrconv import nnc

FEATURES, HIDDEN, CLASSES = 16, 32, 4
UNREC = int(nnc.TopologyStorageFormat.NNR_TPL_UNREC)  # tensors only: this model has no native file


def init_model(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "fc1.weight": (rng.standard_normal((HIDDEN, FEATURES)) * np.sqrt(2 / FEATURES)).astype(np.float32),
        "fc1.bias": np.zeros(HIDDEN, np.float32),
        "fc2.weight": (rng.standard_normal((CLASSES, HIDDEN)) * np.sqrt(2 / HIDDEN)).astype(np.float32),
        "fc2.bias": np.zeros(CLASSES, np.float32),
    }


def forward(w: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0)
    return h, h @ w["fc2.weight"].T + w["fc2.bias"]


def accuracy(w: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    return float((forward(w, x)[1].argmax(1) == y).mean())


def train(w: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, epochs: int, lr: float = 0.05) -> dict:
    """Plain minibatch SGD on softmax cross-entropy; returns new float32 weights."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    rng = np.random.default_rng(len(y))
    for _ in range(epochs):
        for batch in np.array_split(rng.permutation(len(y)), max(1, len(y) // 32)):
            xb, yb = x[batch], y[batch]
            h, logits = forward(w, xb)
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(yb)), yb] -= 1
            g = p / len(yb)
            dh = (g @ w["fc2.weight"]) * (h > 0)
            grads = {"fc2.weight": g.T @ h, "fc2.bias": g.sum(0), "fc1.weight": dh.T @ xb, "fc1.bias": dh.sum(0)}
            for k in w:
                w[k] -= lr * grads[k]
    return {k: v.astype(np.float32) for k, v in w.items()}


@dataclass
class Client:
    x: np.ndarray
    y: np.ndarray


def make_data(clients: int, seed: int) -> tuple[list[Client], np.ndarray, np.ndarray]:
    """Gaussian class clusters; each client draws mostly two of the four classes (non-IID)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((CLASSES, FEATURES)) * 1.2

    def draw(n: int, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = rng.choice(CLASSES, size=n, p=probs)
        return (centers[y] + rng.standard_normal((n, FEATURES))).astype(np.float32), y

    parts = []
    for i in range(clients):
        probs = np.full(CLASSES, 0.05)
        probs[[i % CLASSES, (i + 1) % CLASSES]] = 0.45
        parts.append(Client(*draw(int(rng.integers(100, 300)), probs / probs.sum())))
    x_test, y_test = draw(1000, np.full(CLASSES, 1 / CLASSES))
    return parts, x_test, y_test


def flower_average(updates: list[dict[str, np.ndarray]], counts: list[int]) -> dict[str, np.ndarray] | None:
    """Flower's FedAvg aggregation of the same client models, or None without Flower."""
    try:
        from flwr.server.strategy.aggregate import aggregate
    except ImportError:
        return None
    names = list(updates[0])
    mean = aggregate([([u[n] for n in names], c) for u, c in zip(updates, counts, strict=True)])
    return dict(zip(names, mean, strict=True))


def run(rounds: int = 5, clients: int = 8, epochs: int = 2, seed: int = 0, workdir: Path | None = None) -> list[dict]:
    """Run the federation; returns one record per round (also printed)."""
    parts, x_test, y_test = make_data(clients, seed)
    params = sum(v.size for v in init_model(seed).values())
    with tempfile.TemporaryDirectory(prefix="nnrconv-fl-") as tmp:
        folder = Path(workdir or tmp)
        chain = [folder / "global-0.nnr"]
        chain[0].write_bytes(nnc.encode_model(init_model(seed).items(), b"", UNREC))
        print(f"round 0: full model {chain[0].stat().st_size} B ({4 * params} B as float32), {params} parameters")
        records = []
        plain = init_model(seed)  # the same federation with float32 updates, for reference
        for r in range(1, rounds + 1):
            locals_ = [train(plain, c.x, c.y, epochs) for c in parts]
            weights = np.asarray([len(c.y) for c in parts], np.float64) / sum(len(c.y) for c in parts)
            plain = {n: sum(w * m[n] for w, m in zip(weights, locals_, strict=True)).astype(np.float32) for n in plain}
            base = nnc.read_chain([(p.read_bytes(), p.name) for p in chain])
            start = {name: t.values.reshape(t.values.shape) for name, t in base.tensors.items()}
            paths, counts = [], []
            for i, client in enumerate(parts):
                local = train(start, client.x, client.y, epochs)
                path = folder / f"round{r}-client{i}.nnr"
                path.write_bytes(nnc.encode_update(local.items(), b"", UNREC, base))
                paths.append(path)
                counts.append(len(client.y))
            merged = folder / f"global-{r}.nnr"
            nnrconv.merge(chain, paths, merged, weights=counts)
            chain.append(merged)
            decoded = nnc.read_chain([(p.read_bytes(), p.name) for p in chain]).tensors
            model = {name: t.values for name, t in decoded.items()}
            # Flower's FedAvg on the client models the server received (the decoded NNR updates);
            # the merged update is coded once more, so they agree to the coding precision
            restored = [nnc.decode_model(p.read_bytes(), base=base).tensors for p in paths]
            fl = flower_average(restored, counts)
            agree = None if fl is None else min(nnc.snr_db(fl[n], model[n].reshape(fl[n].shape)) for n in model)
            uplink = sum(p.stat().st_size for p in paths)
            record = {
                "round": r,
                "accuracy": accuracy(model, x_test, y_test),
                "accuracy_float": accuracy(plain, x_test, y_test),
                "uplink_nnr": uplink,
                "uplink_float": 4 * params * clients,
                "downlink_nnr": merged.stat().st_size,
                "downlink_float": 4 * params,
                "flower_snr_db": agree,
            }
            records.append(record)
            print(
                f"round {r}: accuracy {record['accuracy']:.3f} "
                f"(float32 updates: {record['accuracy_float']:.3f}), uplink {uplink} B as NNR vs "
                f"{record['uplink_float']} B as float32 ({uplink / record['uplink_float']:.1%}), "
                f"downlink {record['downlink_nnr']} B vs {record['downlink_float']} B"
                + ("" if agree is None else f", Flower FedAvg agrees to {agree:.1f} dB SNR")
            )
        return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    run(args.rounds, args.clients, args.epochs)


if __name__ == "__main__":
    main()
