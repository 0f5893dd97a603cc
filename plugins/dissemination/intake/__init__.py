"""Fresh rounds in: the survey source, the file drop, the round contract, validation,
urgent signals, the DAP import and staging on disk.
"""

from .._exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "columns": ("as_arrow",),
    "contacts": ("redact",),
    "contract": ("Conformer", "ContractBroken", "conform",),
    "dap": ("DapError", "import_dap",),
    "fresh": ("DropFileRejected", "import_drop", "new_rounds", "read_export",),
    "headers": ("describe", "not_found",),
    "signals": ("signal_new_rounds",),
    "source": ("RoundMeta", "latest_round_id", "read_meta", "round_ids_between", "write_round",),
    "staging": (
        "RUN_FOLDER", "private_dir", "read_staged", "run_folder", "run_name",
        "staged_columns", "staged_round_path", "sweep",
    ),
    "validation": ("RoundsStopped", "checked", "validate_round",),
})
