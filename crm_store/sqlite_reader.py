"""One SQLite query's rows read by ADBC and written to stdout as an Arrow IPC stream, in a
process of its own (``crm_store.arrow_io`` runs it: ``python -m crm_store.sqlite_reader PATH
OPTIONS_JSON``, the SQL on stdin).

ADBC links its own copy of SQLite. In the store's process, closing it would drop the POSIX locks
the store's connections hold and, seeing no other connection, checkpoint and delete the WAL under
them: a corrupt store (sqlite.org/howtocorrupt.html, "multiple copies of SQLite"). Another
process's locks are seen for what they are. Only ADBC's low-level API is imported (its DB-API
module imports pandas: a second per query).
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    import adbc_driver_manager
    import adbc_driver_sqlite
    import pyarrow as pa

    path, options = sys.argv[1], json.loads(sys.argv[2])
    sql = sys.stdin.read()
    database = adbc_driver_sqlite.connect(path)
    connection = adbc_driver_manager.AdbcConnection(database)
    statement = adbc_driver_manager.AdbcStatement(connection)
    try:
        if options:
            statement.set_options(**options)
        statement.set_sql_query(sql)
        stream, _ = statement.execute_query()
        reader = pa.RecordBatchReader._import_from_c(stream.address)
        with pa.ipc.new_stream(sys.stdout.buffer, reader.schema) as out:
            for batch in reader:
                out.write_batch(batch)
    finally:
        statement.close()
        connection.close()
        database.close()


if __name__ == "__main__":
    main()
