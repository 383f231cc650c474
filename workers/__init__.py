"""Worker processes of the pools and the task code they run."""
