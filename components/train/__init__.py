"""The Train page's parts: train and backend forms, runs table, run exports, sweeps, live run histories."""
