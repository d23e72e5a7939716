"""Baseline MQTT peers for bench_classical.py, each run as its own process.

- echo:  paho callback republishes every request unchanged (the broker + paho floor).
- naive: paho callback parses JSON and calls scikit-learn predict_proba per message, the
         way a first attempt at "ML over MQTT" usually looks.
- ort:   a hand-written paho + onnxruntime peer on a bundle's model.onnx (a classifier
         exported by skl2onnx): parse, run, answer label and probabilities; no checks,
         no outbox (what the agent's extra work is measured against).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["echo", "naive", "ort"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host-model", help="host model directory (naive mode)")
    ap.add_argument("--bundle", help="bundle directory (ort mode)")
    ap.add_argument("--ca-file", help="connect over TLS, trusting this CA")
    ap.add_argument("--qos", type=int, default=0, choices=[0, 1], help="QoS of in and out")
    ap.add_argument("--base", help="topic base (default bench/MODE)")
    args = ap.parse_args()
    base = args.base or f"bench/{args.mode}"
    predict = None
    if args.mode == "naive":
        from edgewise.converters.host_model import load_host_model

        host = load_host_model(args.host_model)
        pipeline, classes = host.pipeline, [str(c) for c in host.pipeline.classes_]

        def predict(doc: dict) -> dict:  # type: ignore[type-arg]
            import numpy as np

            proba = pipeline.predict_proba(np.asarray(doc["instances"], dtype=np.float32))
            preds = [
                {"label": classes[int(p.argmax())], "probabilities": dict(zip(classes, p.tolist()))}
                for p in proba
            ]
            return {"id": doc.get("id"), "predictions": preds}

    if args.mode == "ort":
        predict = _ort_predict(args.bundle)

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{args.mode}-{args.port}")
    if args.ca_file:
        import ssl

        client.tls_set_context(ssl.create_default_context(cafile=args.ca_file))

    def on_connect(c: paho.Client, u: object, f: object, rc: object, p: object) -> None:
        c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.subscribe(f"{base}/in", args.qos)
        c.publish(f"{base}/ready", b"1", retain=True)

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        body = msg.payload if predict is None else json.dumps(predict(json.loads(msg.payload)))
        c.publish(f"{base}/out", body, qos=args.qos)

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect("127.0.0.1", args.port)
    with contextlib.suppress(KeyboardInterrupt):
        client.loop_forever()
    sys.exit(0)


def _ort_predict(bundle: str):  # type: ignore[no-untyped-def]
    import numpy as np
    import onnxruntime as ort

    with open(f"{bundle}/manifest.json", encoding="utf-8") as fh:
        manifest = json.load(fh)
    session = ort.InferenceSession(f"{bundle}/model.onnx", providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    labels = [str(c) for c in manifest["output"]["labels"]]

    def predict(doc: dict) -> dict:  # type: ignore[type-arg]
        x = np.asarray(doc["instances"], dtype=np.float32)
        proba = session.run(None, {name: x})[-1]
        preds = [
            {"label": labels[int(p.argmax())], "probabilities": dict(zip(labels, p.tolist()))}
            for p in np.asarray(proba)
        ]
        return {"id": doc.get("id"), "predictions": preds}

    return predict


if __name__ == "__main__":
    main()
