"""The DVC stages, one module each, each run as `python -m pipeline.stages.<stage>` by dvc.yaml:
fetch, prepare, embed, train, export, validate, report. A stage module imports library modules
only, never another stage (tests/test_dvc_deps.py), and its deps in dvc.yaml are its imports."""
