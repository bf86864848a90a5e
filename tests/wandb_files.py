"""Read what W&B wrote for an offline run: the records of its ``run-*.wandb`` transaction log.

The log is the LevelDB log format (32 KiB blocks of chunks with a 7-byte header) after a 7-byte
``:W&B`` file header; each record is a ``wandb_internal_pb2.Record`` protobuf.
"""

import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[pb.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records, chunks, pos = [], b"", 7
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:  # block trailer padding
            pos += left_in_block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def offline_run(run_dir: Path) -> dict[str, Any]:
    """Run metadata, resolved config and last logged value of each metric of one offline run dir."""
    (log,) = run_dir.glob("run-*.wandb")
    run: dict[str, Any] = {"history": {}}
    for record in read_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info = record.run
            run.update(id=info.run_id, project=info.project, group=info.run_group, job_type=info.job_type)
            run["tags"] = list(info.tags)
            run["config"] = {item.key: json.loads(item.value_json) for item in info.config.update}
        elif kind == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                run["history"][key] = json.loads(item.value_json)
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run
