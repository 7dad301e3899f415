from snapshop.cli import app

app(prog_name="snapshop")
