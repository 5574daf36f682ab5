"""Wire protocols: each package translates its API's bodies into core requests, and core
events back into its own responses, streams and errors; nothing else."""
