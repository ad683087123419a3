"""`python -m pipeline …` is the same as the `whereby-pipeline` console script."""

from pipeline.cli import main

main()
