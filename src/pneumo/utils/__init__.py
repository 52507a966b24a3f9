"""Small helpers every layer may use: atomic file writes and hashing (`files`), the one folder
walker and path expansion (`walk`), progress displays (`progress`). Nothing here imports torch."""
