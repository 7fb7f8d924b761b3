"""The ``genq`` command (:mod:`genq.cli.main`): the job commands, which need only the client, and
the commands that start the stack or a role of it, which import their role when run; one
supervisor (:mod:`genq.cli.supervisor`) for ``genq up`` and ``genq worker --gpus``."""
