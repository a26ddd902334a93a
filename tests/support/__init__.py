"""What the tests, tests/fuzz and bench/ share: the test-data locator (testdata), the fetcher that
fills it (fetch_testdata, run by scripts/fetch-testdata), and builders of real inputs and servers:
stores (realstore), packages (packaging), hostile files (hostile, elfedit), weak-modules roots
(weakroot), local HTTP, Koji, PostgreSQL and RabbitMQ servers (webdata, kojihub, pgserver, rabbitserver).

pytest puts tests/ on sys.path (tests/ has no __init__.py, so its rootdir-relative conftest is
imported from there); a script outside pytest inserts tests/ itself before `import support`."""
