"""Small helpers every layer above may use: atomic file writes (`atomic`), output checks before any
work (`output_checks`), clean-up of interrupted writes' temporary files (`temp_files`), emptying a
folder only of what pneumo wrote (`known_contents`), file hashing (`hashing`), the one bounded
reader of a file a user names (`reading`), the one CSV writer and reader (`csvfile`), one writer
per output (`lock`), the one folder walker and path expansion (`walk`), progress displays
(`progress`). Nothing here imports torch."""
