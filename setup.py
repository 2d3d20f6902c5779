from setuptools import find_packages, setup

setup(
    name="docker-job-manager",
    version="0.1.0",
    description="Run jobs in Docker containers over one or more engines, with callbacks "
                "in the caller's process",
    license="MIT",
    packages=find_packages(include=["backend", "backend.*"]),
    # the demo's images (``jobmanager demo`` works installed) and the PEP 561 marker
    package_data={"backend": ["py.typed", "cli/demo/*/Dockerfile", "cli/demo/containers/*/*"]},
    python_requires=">=3.9",
    # the library speaks to engines with its own standard-library client (backend._http);
    # docker-py is what the tests and benchmarks compare with and check through
    install_requires=[],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout", "mypy", "docker>=6.1", "hypothesis>=6",
                 "prometheus_client>=0.20"],
        "metrics": ["prometheus_client>=0.20"],
        "docs": ["sphinx>=7"],
        # epicbox 1.1: benchmarks/exec.py compares code execution with its run()
        "bench": ["matplotlib", "docker>=6.1", "epicbox==1.1.*"],
    },
    entry_points={"console_scripts": ["jobmanager=backend.cli:main"]},
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        # the versions make test runs the suite on (test-pythons: the unit tests and the core)
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.13",
        "Operating System :: POSIX :: Linux",
    ],
)
