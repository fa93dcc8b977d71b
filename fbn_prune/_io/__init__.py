"""Safe file system writes: write-then-rename, output folders and their locks, test kill points."""
