"""The Batch and Files API's engine: file objects, batch state, line validation and execution.

`kcw serve` keeps file contents in KCW_DATA_DIR and batch state in Redis (keys under
`kcw:batch:`); it feeds each batch's lines to the workers as `kcw.batch_line` jobs
through a bounded window, and appends their results to the output and error files.
"""
