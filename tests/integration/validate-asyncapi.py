#!/usr/bin/python3
"""Validates MQTT payloads against the schemas of doc/asyncapi.yaml.

validate-asyncapi.py ASYNCAPI.yaml SUB.txt [STATUS.json...]
SUB.txt holds mosquitto_sub -v lines ("topic payload"); each JSON payload is
checked against the schema of its channel (result, event, status, a command
reply, which may also be a trigger's result). Prints counts per channel and
every failure; exits 1 on any failure or when too little was seen."""
import collections
import json
import sys

import jsonschema
import yaml

doc = yaml.safe_load(open(sys.argv[1]))
resolver = jsonschema.RefResolver("", doc)


def validator(name):
    return jsonschema.Draft7Validator({"$ref": f"#/components/schemas/{name}"}, resolver=resolver)


V = {n: validator(n) for n in ("Result", "Status", "Event", "Reply")}
seen = collections.Counter()
codes = set()
failures = []


def check(kind, topic, payload):
    try:
        obj = json.loads(payload)
    except ValueError as e:
        failures.append(f"{topic}: not JSON ({e}): {payload[:120]}")
        return
    if kind == "Reply" and isinstance(obj, dict) and "verdict" in obj:
        kind = "Result"  # a trigger's second answer is its part's result
    errors = sorted(V[kind].iter_errors(obj), key=lambda e: list(e.path))
    for e in errors[:3]:
        failures.append(f"{topic} ({kind}): {e.message} at {list(e.path)}: {payload[:200]}")
    seen[kind] += 1
    if kind == "Event" and isinstance(obj, dict):
        codes.add(obj.get("code"))


with open(sys.argv[2], errors="replace") as f:
    for line in f:
        line = line.rstrip("\n")
        if " " not in line:
            continue
        topic, payload = line.split(" ", 1)
        if payload == "fixture-probe":
            continue  # the test's own probe
        if topic.endswith("/result"):
            check("Result", topic, payload)
        elif topic.endswith("/event"):
            check("Event", topic, payload)
        elif "/cmd/" in topic and topic.endswith("/reply"):
            check("Reply", topic, payload)
        elif topic.endswith("/status"):
            check("Status", topic, payload)
for path in sys.argv[3:]:
    check("Status", path, open(path).read().strip())

print("validated:", dict(seen), "event codes:", sorted(c for c in codes if c))
for f in failures[:40]:
    print("FAIL", f)
if failures:
    sys.exit(1)
if seen["Result"] < 50 or seen["Event"] < 3 or seen["Reply"] < 5 or seen["Status"] < 1:
    print("too few payloads seen to say anything")
    sys.exit(1)
