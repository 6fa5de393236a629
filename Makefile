# make lab   installs what is missing, then runs the main job (tox -e lab: the conformance suite)
# make test  installs what is missing, then runs the unit tests and the conformance suite
# Both need root: the lab creates namespaces, loads charon and captures packets.

PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := .lab
# Every Debian package the lab needs: column 2 of lab/programs.txt, the table `lab doctor` and
# every run check, so what is installed and what is checked cannot drift apart. The real servers
# (nginx, dovecot, krb5kdc, slapd) run only inside lab namespaces: they are installed with a
# policy-rc.d denying every start, so none of them ever listens on this machine itself.
PROGRAMS := lab/programs.txt
APT_PACKAGES := $(shell sed -e 's/\#.*//' $(PROGRAMS) | awk 'NF == 3 && !seen[$$2]++ {print $$2}')
ifeq ($(strip $(APT_PACKAGES)),)
$(error no packages read from $(PROGRAMS))
endif

# Only for the report's screenshot test (a real headless browser): make browser (make unit runs it)
TEST_PACKAGES := chromium

.PHONY: setup packages lab lab-docker lab-docker-ci test unit coverage conformance verify bench bench-all bench-docker bench-kill clean cleanup help images browser

help:
	@echo "make setup  install the Debian packages of lab/programs.txt, make .venv, check the UML kernel"
	@echo "make lab    install what is missing, run the conformance suite on every topology (tox -e lab)"
	@echo "make test   install what is missing, run unit tests and the conformance suite"
	@echo "make lab-docker     the whole conformance suite with every host a container (tox -e lab-docker)"
	@echo "make lab-docker-ci  CI's container subset: default design, one -real design, one failover"
	@echo "make coverage  unit tests (no root) with the line coverage of lab/guest and lab/verdicts (>= 70%)"
	@echo "make verify TOPOLOGY=topologies/exchange-fe-be-http.yaml   one design, table and report"
	@echo "make bench  time lab verify (guest boot, bring-up, probes, teardown) into bench/results/"
	@echo "make bench-all  every figure of the README's speed table (bench/results/all.json, ~10 min)"
	@echo "make bench-docker  time lab verify --provider docker on the default design (bench/results/verify-docker.json)"
	@echo "make bench-kill  how long a guest outlives kill -9 of its lab verify (bench/results/kill.json)"
	@echo "make cleanup  remove what a killed run left behind"
	@echo "make images   build the Docker provider's strongSwan image offline (debootstrap; else on first use)"

packages:  # the package list, as make setup installs it
	@echo $(APT_PACKAGES)

setup: $(STAMP)/apt $(STAMP)/venv $(STAMP)/uml

$(STAMP)/apt: $(PROGRAMS)
	@mkdir -p $(STAMP)
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null | grep -qx installed || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "setup: installing Debian packages:$$missing"; \
		guard=""; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
			chmod 755 /usr/sbin/policy-rc.d; guard=1; }; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
		rc=$$?; [ -z "$$guard" ] || rm -f /usr/sbin/policy-rc.d; [ $$rc -eq 0 ] || exit $$rc; \
	else echo "setup: Debian packages present"; fi
	@touch $@

$(STAMP)/venv: pyproject.toml $(STAMP)/apt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python -m compileall -q lab  # bytecode: an editable install compiles none (0.2 s a run with PYTHONDONTWRITEBYTECODE)
	@touch $@

$(STAMP)/uml: tools/install-uml-kernel.sh $(STAMP)/apt
	tools/install-uml-kernel.sh
	@touch $@

lab: setup
	$(BIN)/tox -e lab

lab-docker: setup images
	$(BIN)/tox -e lab-docker

lab-docker-ci: setup images
	$(BIN)/tox -e lab-docker-ci

unit: setup browser
	$(BIN)/python -m pytest tests -q

# Lines of the guest runtime and the verdicts that the unit tests (no root) reach; 70% at least.
coverage: setup browser
	$(BIN)/python -m pytest tests -q --cov=lab.guest --cov=lab.verdicts --cov-report=term-missing --cov-fail-under=70

conformance: setup
	$(BIN)/tox -e lab

test: unit conformance

TOPOLOGY ?= topologies/exchange-fe-be-http.yaml
verify: setup
	$(BIN)/lab verify $(TOPOLOGY)

bench: setup
	$(BIN)/python -m compileall -q lab  # fresh bytecode: a run must not time compiling the lab (0.2 s)
	$(BIN)/python bench/bench_verify.py $(TOPOLOGY)

bench-docker: setup  # the Docker provider's figure (issue 14's 15 s target)
	$(BIN)/python bench/bench_verify.py $(TOPOLOGY) --provider docker

bench-kill: setup  # the guest must die within a second of its command, however it dies
	$(BIN)/python bench/bench_kill.py

bench-all: setup  # every figure of the README's speed table, ~10 minutes on a quiet machine
	$(BIN)/python -m compileall -q lab
	$(BIN)/python bench/bench_all.py $(BENCH_ARGS)

browser: setup
	@dpkg-query -W -f='$${db:Status-Status}' $(TEST_PACKAGES) 2>/dev/null | grep -qx installed || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(TEST_PACKAGES); }

images: setup
	$(BIN)/lab image build

cleanup:
	$(BIN)/lab cleanup

clean: cleanup
	rm -rf $(VENV) .tox $(STAMP) reports
