"""`python -m tasks COMMAND`: see tasks/cli.py. Also the entry point under
`accelerate launch --config_file infra/accelerate/<fsdp|deepspeed_zero3>.yaml -m tasks run sft`."""
import sys

from tasks.cli import main

if __name__ == "__main__":
    sys.exit(main())
