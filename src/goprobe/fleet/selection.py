"""Which processes a fleet request selects: rules over what the agents report (a process is selected when any
rule matches it; every field a rule gives must match)."""

from __future__ import annotations

import os

import attrs

from goprobe.errors import RequestError


@attrs.frozen
class Rule:
    exe: str = ""  # base name, or the full path when it contains '/'
    cmdline: str = ""  # substring of the arguments joined by spaces
    machine_label: str = ""  # key=value
    pid: int = 0
    agent_id: str = ""

    @classmethod
    def parse(cls, text: str) -> Rule:
        """``exe=shop,label=zone=eu,pid=42,cmdline=--port 80,agent=ID`` (comma-separated key=value)."""
        fields = {}
        names = {"exe": "exe", "cmdline": "cmdline", "label": "machine_label", "pid": "pid", "agent": "agent_id"}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep or key not in names:
                raise RequestError(f"bad selection rule {part!r} in {text!r}: use "
                                   "exe=NAME, cmdline=TEXT, label=KEY=VALUE, pid=N or agent=ID, comma-separated")
            if not value:  # "exe=" (say, from an unset variable) must not select every process of the fleet
                raise RequestError(f"empty value in selection rule {part!r} of {text!r}")
            if key == "pid":
                try:
                    value = int(value)
                except ValueError:
                    value = 0
                if value <= 0:
                    raise RequestError(f"bad pid in selection rule {text!r}: a positive process id")
            if key == "label" and "=" not in value:
                raise RequestError(f"bad machine label in selection rule {text!r}: use label=KEY=VALUE")
            fields[names[key]] = value
        if not fields:
            raise RequestError(f"empty selection rule {text!r}: name the processes (exe=NAME, pid=N, ...)")
        return cls(**fields)

    def matches(self, machine, proc) -> bool:
        """*machine*: an inventory MachineInfo (or its protobuf); *proc*: a GoProcessInfo (or its protobuf)."""
        if self.exe:
            name = proc.exe if "/" in self.exe else os.path.basename(proc.exe)
            if name.removesuffix(" (deleted)") != self.exe:
                return False
        if self.cmdline and self.cmdline not in " ".join(proc.cmdline):
            return False
        if self.machine_label:
            key, _, value = self.machine_label.partition("=")
            if machine.labels.get(key) != value:
                return False
        if self.pid and proc.pid != self.pid:
            return False
        return not self.agent_id or machine.agent_id == self.agent_id


def select(rules, machine, processes) -> list:
    """The *processes* of *machine* that any of *rules* selects (no rule: none)."""
    return [p for p in processes if any(r.matches(machine, p) for r in rules)]
