"""Small helpers every layer above may use: atomic file writes and hashing (`files`), the one
bounded reader of a file a user names (`reading`), the one folder walker and path expansion
(`walk`), progress displays (`progress`). Nothing here imports torch."""
