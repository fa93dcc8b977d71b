"""The machine a run uses: devices, dtypes, threads, sizes, memory and disk estimates, versions."""
