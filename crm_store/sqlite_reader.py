"""SQLite queries read by ADBC and answered as Arrow IPC streams, in a process of its own
(``crm_predict.crm_store.arrow_io`` runs it: ``python -m crm_store.sqlite_reader PATH``).

ADBC links its own copy of SQLite. In the store's process, closing it would drop the POSIX locks
the store's connections hold and, seeing no other connection, checkpoint and delete the WAL under
them: a corrupt store (sqlite.org/howtocorrupt.html, "multiple copies of SQLite"). Another
process's locks are seen for what they are. Only ADBC's low-level API is imported (its DB-API
module imports pandas: a second per process).

One process answers many queries, so its start-up (Python, Arrow, the driver) is paid once per
reader rather than once per query. Each request is a line of JSON on stdin, ``{"sql": …,
"options": {…}}``; each answer on stdout is ``RESPONSE_HEADER`` (a status byte, then the length
of the payload) followed by the payload: an Arrow IPC stream (``OK``) or an error message.
"""

from __future__ import annotations

import json
import struct
import sys

RESPONSE_HEADER = struct.Struct("<BQ")
OK, FAILED = 0, 1


def main() -> None:
    import adbc_driver_manager
    import adbc_driver_sqlite
    import pyarrow as pa

    database = adbc_driver_sqlite.connect(sys.argv[1])
    connection = adbc_driver_manager.AdbcConnection(database)
    out = sys.stdout.buffer
    try:
        for line in sys.stdin.buffer:
            request = json.loads(line)
            statement = adbc_driver_manager.AdbcStatement(connection)
            try:
                if request["options"]:
                    statement.set_options(**request["options"])
                statement.set_sql_query(request["sql"])
                stream, _ = statement.execute_query()
                reader = pa.RecordBatchReader.from_stream(stream)
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, reader.schema) as writer:
                    for batch in reader:
                        writer.write_batch(batch)
                status, payload = OK, sink.getvalue()
            except Exception as exc:  # noqa: BLE001 - answered to the caller, who raises it
                status, payload = FAILED, f"{type(exc).__name__}: {exc}".encode()
            finally:
                statement.close()
            out.write(RESPONSE_HEADER.pack(status, len(payload)))
            out.write(payload)
            out.flush()
    finally:
        connection.close()
        database.close()


if __name__ == "__main__":
    main()
