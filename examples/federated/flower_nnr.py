# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Flower runs the federation; the models travel as NNR bitstreams.

Flower's own server loop drives the rounds (`flwr.server.Server` with a `SimpleClientManager` and
a FedAvg strategy); the clients are Flower `Client`s simulated in this process, each reached
through a small in-process `ClientProxy` (no network). Flower's simulation engine needs Ray (the
`flwr[simulation]` extra, several hundred MB and worker processes), too heavy for the point made
here: the strategy and client code below is what a Ray or gRPC deployment runs unchanged.

NNR replaces Flower's float32 `Parameters` (`tensor_type` says which):

- the server's model is an NNR chain (`"nnr-chain"`): round 0's full model, then one merged
  update per round; a client receives only the links it does not hold yet;
- a client trains from the model that chain decodes to and answers with one NNR update of it
  (`"nnr-update"`, `nnc.encode_update`: the quantized differences, bound to that model);
- `NnrFedAvg.aggregate_fit` averages the updates weighted by the clients' sample counts with
  `nnrconv.merge` (what `nnrconv merge BASE UPDATE... OUT --weights ...` does) and appends the
  result to the chain. It also runs Flower's own FedAvg arithmetic
  (`flwr.server.strategy.aggregate.aggregate`) on the decoded updates, to show the two agree.

The same federation then runs again with Flower's stock `FedAvg` and float32 `Parameters`
(`ndarrays_to_parameters`); the bytes printed per round are those of the `Parameters` that
crossed each client proxy, both ways.

Run: python examples/federated/flower_nnr.py [--rounds 5] [--clients 8]
(needs Flower: `pip install nnrconv[federated]`, or scripts/setup; see README "Federated".)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # never phone home from an example

import flwr  # after the telemetry switch above
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Parameters,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import Server, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.strategy.aggregate import aggregate

sys.path.insert(0, str(Path(__file__).parent))
from federated_nnr import UNREC, Client, accuracy, init_model, make_data, train

import nnrconv
from nnrconv import nnc

NAMES = list(init_model(0))  # the order float32 Parameters list the tensors in


def decode_chain(links: list[bytes]) -> dict[str, np.ndarray]:
    """The model an NNR chain (full model, then updates in order) decodes to."""
    base = nnc.read_chain([(link, f"link {i}") for i, link in enumerate(links)])
    return {name: t.values for name, t in base.tensors.items()}


class NnrClient(flwr.client.Client):
    """Trains from the chain's model and answers with an NNR update of that model."""

    def __init__(self, data: Client, epochs: int) -> None:
        self.data, self.epochs = data, epochs

    def fit(self, ins: FitIns) -> FitRes:
        links = list(ins.parameters.tensors)
        base = nnc.read_chain([(link, f"link {i}") for i, link in enumerate(links)])
        local = train({n: t.values for n, t in base.tensors.items()}, self.data.x, self.data.y, self.epochs)
        update = nnc.encode_update(local.items(), b"", UNREC, base)
        return FitRes(Status(Code.OK, "ok"), Parameters([update], "nnr-update"), len(self.data.y), {})


class FloatClient(flwr.client.Client):
    """The same training with Flower's float32 parameters, for reference."""

    def __init__(self, data: Client, epochs: int) -> None:
        self.data, self.epochs = data, epochs

    def fit(self, ins: FitIns) -> FitRes:
        model = dict(zip(NAMES, parameters_to_ndarrays(ins.parameters), strict=True))
        local = train(model, self.data.x, self.data.y, self.epochs)
        params = ndarrays_to_parameters([local[n] for n in NAMES])
        return FitRes(Status(Code.OK, "ok"), params, len(self.data.y), {})


class InProcessProxy(ClientProxy):
    """Reaches a Flower client in this process and counts the parameter bytes that cross.

    An NNR chain is sent incrementally: the client keeps the links it already received.
    """

    def __init__(self, cid: str, client: flwr.client.Client, traffic: dict[str, int]) -> None:
        super().__init__(cid)
        self.client, self.traffic, self.held = client, traffic, 0

    def fit(self, ins: FitIns, timeout: float | None, group_id: int | None) -> FitRes:
        tensors = ins.parameters.tensors
        new = tensors[self.held :] if ins.parameters.tensor_type == "nnr-chain" else tensors
        if ins.parameters.tensor_type == "nnr-chain":
            self.held = len(tensors)
        res = self.client.fit(ins)
        self.traffic["down"] += sum(len(t) for t in new)
        self.traffic["up"] += sum(len(t) for t in res.parameters.tensors)
        return res

    def get_properties(self, ins, timeout, group_id):  # type: ignore[no-untyped-def]
        raise NotImplementedError("not used by this example")

    get_parameters = evaluate = reconnect = get_properties


class NnrFedAvg(FedAvg):
    """FedAvg over NNR updates: the global model is an NNR chain, grown by one merged update a round."""

    def __init__(self, full_model: bytes, clients: int, folder: Path, test: tuple[np.ndarray, np.ndarray]) -> None:
        super().__init__(
            fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients, min_available_clients=clients,
            initial_parameters=Parameters([full_model], "nnr-chain"),
        )  # fmt: skip
        self.folder, self.test = folder, test
        self.chain = [folder / "global-0.nnr"]
        self.chain[0].write_bytes(full_model)
        self.flower_snr_db: dict[int, float] = {}

    def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
        if not results or failures:
            return None, {}
        results = sorted(results, key=lambda r: int(r[0].cid))
        paths, counts = [], []
        for proxy, res in results:
            path = self.folder / f"round{server_round}-client{proxy.cid}.nnr"
            path.write_bytes(res.parameters.tensors[0])
            paths.append(path)
            counts.append(res.num_examples)
        merged = self.folder / f"global-{server_round}.nnr"
        nnrconv.merge(self.chain, paths, merged, weights=counts)
        self.chain.append(merged)
        links = [p.read_bytes() for p in self.chain]
        # Flower's FedAvg arithmetic on the client models the server received agrees with the
        # merged update to the coding precision (the merged update is quantized once more)
        base = nnc.read_chain([(link, p.name) for link, p in zip(links[:-1], self.chain, strict=False)])
        received = [nnc.decode_model(p.read_bytes(), base=base).tensors for p in paths]
        fedavg = aggregate([([m[n] for n in NAMES], c) for m, c in zip(received, counts, strict=True)])
        model = decode_chain(links)
        self.flower_snr_db[server_round] = min(
            nnc.snr_db(ref, model[n].reshape(ref.shape)) for n, ref in zip(NAMES, fedavg, strict=True)
        )
        return Parameters(links, "nnr-chain"), {}

    def evaluate(self, server_round, parameters):  # type: ignore[no-untyped-def]
        return 0.0, {"accuracy": accuracy(decode_chain(list(parameters.tensors)), *self.test)}


def _float_strategy(clients: int, seed: int, test: tuple[np.ndarray, np.ndarray]) -> FedAvg:
    def evaluate(server_round, ndarrays, config):  # type: ignore[no-untyped-def]
        return 0.0, {"accuracy": accuracy(dict(zip(NAMES, ndarrays, strict=True)), *test)}

    start = init_model(seed)
    return FedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients, min_available_clients=clients,
        initial_parameters=ndarrays_to_parameters([start[n] for n in NAMES]), evaluate_fn=evaluate,
    )  # fmt: skip


def _federate(strategy: FedAvg, clients: list[flwr.client.Client], rounds: int) -> tuple[list[dict], list[float]]:
    """Flower's server loop over in-process clients; per round the traffic and the accuracy."""
    manager = SimpleClientManager()
    traffic = {"up": 0, "down": 0}
    proxies = [InProcessProxy(str(i), c, traffic) for i, c in enumerate(clients)]
    for proxy in proxies:
        manager.register(proxy)
    server = Server(client_manager=manager, strategy=strategy)
    server.set_max_workers(1)  # the clients share this process; keep them sequential
    per_round: list[dict] = []
    original_fit_round = server.fit_round

    def fit_round(server_round: int, timeout: float | None):  # type: ignore[no-untyped-def]
        before = dict(traffic)
        out = original_fit_round(server_round, timeout)
        per_round.append({k: traffic[k] - before[k] for k in traffic})
        return out

    server.fit_round = fit_round  # type: ignore[method-assign]
    history, _ = server.fit(num_rounds=rounds, timeout=None)
    accuracies = [acc for _, acc in history.metrics_centralized["accuracy"]]
    return per_round, accuracies


def run(rounds: int = 5, clients: int = 8, epochs: int = 2, seed: int = 0, workdir: Path | None = None) -> list[dict]:
    """Run both federations with Flower; returns one record per round (also printed)."""
    logging.getLogger("flwr").setLevel(logging.ERROR)  # Flower logs every step at INFO
    parts, x_test, y_test = make_data(clients, seed)
    with tempfile.TemporaryDirectory(prefix="nnrconv-flower-") as tmp:
        folder = Path(workdir or tmp)
        full = nnc.encode_model(init_model(seed).items(), b"", UNREC)
        nnr_strategy = NnrFedAvg(full, clients, folder, (x_test, y_test))
        nnr_traffic, nnr_acc = _federate(nnr_strategy, [NnrClient(p, epochs) for p in parts], rounds)
        float_strategy = _float_strategy(clients, seed, (x_test, y_test))
        float_traffic, float_acc = _federate(float_strategy, [FloatClient(p, epochs) for p in parts], rounds)
    records = []
    for r in range(1, rounds + 1):
        nnr, flt = nnr_traffic[r - 1], float_traffic[r - 1]
        record = {
            "round": r,
            "accuracy": nnr_acc[r],
            "accuracy_float": float_acc[r],
            "uplink_nnr": nnr["up"],
            "uplink_float": flt["up"],
            "downlink_nnr": nnr["down"],
            "downlink_float": flt["down"],
            "flower_snr_db": nnr_strategy.flower_snr_db[r],
        }
        records.append(record)
        print(
            f"round {r}: accuracy {record['accuracy']:.3f} (float32: {record['accuracy_float']:.3f}); "
            f"bytes up {nnr['up']} NNR vs {flt['up']} float32 ({nnr['up'] / flt['up']:.1%}), "
            f"down {nnr['down']} vs {flt['down']} ({nnr['down'] / flt['down']:.1%}); "
            f"Flower's FedAvg agrees to {record['flower_snr_db']:.1f} dB SNR"
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
