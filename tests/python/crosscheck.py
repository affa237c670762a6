"""Cross-language checks with the real PyPI clients, driven by the Rust integration tests.

  sign-standard SECRET MSG_ID TIMESTAMP BODY_FILE   -> prints the webhook-signature header (standardwebhooks)
  verify-standard SECRET MSG_ID TIMESTAMP SIG BODY_FILE -> exits 0 when standardwebhooks accepts it
  verify-stripe SECRET HEADER BODY_FILE             -> exits 0 when stripe.Webhook.construct_event accepts it
  consume BROKERS TOPIC AVSC_DIR COUNT TIMEOUT_S    -> prints one JSON line per event, decoded with fastavro
                                                       from the .avsc files only (single-object encoding)
"""
import datetime
import io
import json
import sys


def sign_standard(secret, msg_id, ts, body_file):
    from standardwebhooks import Webhook

    body = open(body_file, "rb").read().decode()
    when = datetime.datetime.fromtimestamp(int(ts), tz=datetime.timezone.utc)
    print(Webhook(secret).sign(msg_id, when, body))


def verify_standard(secret, msg_id, ts, sig, body_file):
    from standardwebhooks import Webhook

    body = open(body_file, "rb").read()
    headers = {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": sig}
    Webhook(secret).verify(body, headers)


def verify_stripe(secret, header, body_file):
    import stripe

    body = open(body_file, "rb").read().decode()
    stripe.Webhook.construct_event(body, header, secret)


def consume(brokers, topic, avsc_dir, count, timeout_s):
    import glob
    import time

    from confluent_kafka import Consumer
    from fastavro import parse_schema, schemaless_reader
    from fastavro.schema import fingerprint, to_parsing_canonical_form

    readers = {}
    for path in glob.glob(f"{avsc_dir}/*.avsc"):
        schema = parse_schema(json.load(open(path)))
        fp = fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
        readers[bytes.fromhex(fp)] = schema  # fastavro prints the bytes in wire order
    consumer = Consumer(
        {"bootstrap.servers": brokers, "group.id": f"crosscheck-{time.time_ns()}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    seen, deadline = set(), time.time() + float(timeout_s)
    while len(seen) < int(count) and time.time() < deadline:
        m = consumer.poll(0.2)
        if m is None or m.error():
            continue
        if (m.partition(), m.offset()) in seen:
            continue
        seen.add((m.partition(), m.offset()))
        value = m.value()
        assert value[:2] == b"\xc3\x01", "single-object marker"
        record = schemaless_reader(io.BytesIO(value[10:]), readers[value[2:10]])
        assert m.headers() is not None
        assert dict(m.headers())["schema_fingerprint"].decode() == value[2:10].hex()
        headers = {k: v.decode() for k, v in (m.headers() or [])}
        out = {k: (str(v) if not isinstance(v, (int, str, type(None))) else v) for k, v in record.items()}
        print(json.dumps({"key": m.key().decode(), "headers": headers, "record": out}), flush=True)
    consumer.close()


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"sign-standard": sign_standard, "verify-standard": verify_standard, "verify-stripe": verify_stripe, "consume": consume}[
        command
    ](*args)
