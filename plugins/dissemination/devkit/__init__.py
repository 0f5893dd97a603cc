"""Stand-ins for partners' servers and field data: the demo and the tests use them, production never
does. A local SFTP server (OpenSSH, or pure Python when no sshd is installed), a local SMTP relay,
synthetic survey rounds, and the sandbox that wires them to an embedded Airflow.
"""

from .._exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "synthetic": ("generate_round", "write_export",),
})
