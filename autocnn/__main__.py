"""`python -m autocnn` runs the command line (the dashboard starts its workers this way)."""
from autocnn.cli import main

if __name__ == "__main__":
    main()
