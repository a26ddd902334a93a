"""The store's blob codec used from many threads at once, as the web app's thread pool uses it."""

from __future__ import annotations

import threading

from kabigate.store import codec


def test_blobs_pack_and_unpack_from_many_threads_at_once():
    # A zstandard context shared between threads crashed the process (or failed a read as a
    # "damaged" blob) when two requests unpacked at once; each thread must get its own.
    documents = [list(range(n * 1000, n * 1000 + 100_000)) for n in range(8)]
    blobs = [codec.pack(document) for document in documents]
    failures: list[str] = []

    def hammer(n: int) -> None:
        for _ in range(15):
            try:
                ids = codec.unpack_ids(codec.pack_ids(documents[n]))
                if codec.unpack(blobs[n]) != documents[n] or ids != documents[n]:
                    failures.append(f"thread {n}: wrong round trip")
            except Exception as error:  # noqa: BLE001 (every failure is the finding)
                failures.append(f"thread {n}: {error!r}")

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
