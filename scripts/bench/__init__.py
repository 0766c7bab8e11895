r"""Benchmark every pipeline step against raw ``COPY (FORMAT binary)`` on a scaled Northwind source.

What ``make bench`` runs. A private embedded PostgreSQL (in a temp folder under /tmp, stopped at
exit) gets the Northwind dump, scaled inside PostgreSQL: ``customers``, ``orders`` and the
``order_details`` CSV are repeated ``--scale`` times with remapped keys (default 1000: over 3M rows).
Then, in the same run and on the same data:

* raw ``COPY (SELECT * FROM t) TO STDOUT (FORMAT binary)`` of every table (psql ``\copy``), and
  ``COPY t FROM STDIN (FORMAT binary)`` of those files into empty tables of the same definition
  (primary keys included), in one transaction;
* each step as a pod runs it (``meltano run --no-state-update <job>``, fresh Meltano system DB),
  the median of 3 runs at the main scale (the later ones replace the day's output); the load is 5
  pairs of a first load into an empty warehouse and its rerun;
* each step on an empty source (tables truncated, a one-row CSV): its fixed start-up, printed on
  its own line. The *data part* of a step is its wall time minus that start-up; its ratio is the
  data part over the raw COPY of the same rows;
* the stock ``meltanolabs-tap-postgres`` into our data-tree loader against ``tap-pgcopy`` on a
  slice of ``orders`` (``--stock-slice`` rows), so the gain over stock Meltano is measured;
* how cost grows: the same steps at scale 1, 10 and 100 (``--no-growth`` skips them);
* with ``--backend s3`` (``make bench BACKEND=s3``), the same steps again with the data tree on a
  local S3 server (SeaweedFS ``weed mini`` on loopback, :mod:`scripts.seaweed`), start-up included,
  each run alternating with the file-system run of the same step (a drift of the machine moves
  both alike): the S3 data part over the file-system data part of each step. The server's own
  memory is not counted (a store is not part of a step pod); the CPU seconds it used during each
  S3 step are printed beside it, as it shares the machine's cores with the step.

The goals are printed under the table, each tagged with the issue that set it (``#26``: the data
part of extract-postgres and of the load under single-stream raw COPY, the report within 1.5x its
raw query, every fixed start-up within 1.5 s, every process under 400 MB); the in-process first load
is also timed with the history off, as the load was before the history existed.

``--scaling`` (``make bench-scaling``, :mod:`.scaling`) prints only the scaling table instead:
extract-postgres and load-warehouse on 1, 2 and 4 connections at scale 1000 and 10000, with the
CPU seconds of the step's processes and of the server.

Peak RSS is measured two ways: the kernel's high-water mark of the largest single process of the
command's tree (``ru_maxrss`` of the waited-for descendants, exact), and the largest sum over the
tree seen by polling with psutil every 50 ms (a sample: short peaks can be missed). The server's
backends are not counted for either side (raw COPY or step): both leave the same work to them.

Usage::

    uv run python -m scripts.bench [--scale N] [--stock-slice ROWS] [--no-growth] [--quick]
                                   [--backend fs|s3]
    uv run python -m scripts.bench --scaling [--scaling-scales 1000,10000]
                                             [--scaling-connections 1,2,4]

Prints a fixed-width table and writes it as JSON to ``bench-results/`` (git-ignored).

Modules by job: :mod:`.source` (the scaled source), :mod:`.baselines` (raw COPY),
:mod:`.meltano_steps` (the steps as pods run them, the stock tap), :mod:`.startup`,
:mod:`.inprocess` (the load through :func:`northwind_elt.warehouse_load.load_day` and the report,
without start-up), :mod:`.digests`, :mod:`.measure`, :mod:`.table`, :mod:`.goals` and
:mod:`.output` (pure), :mod:`.scaling` (the scaling table), :mod:`.run` (the command).
"""

