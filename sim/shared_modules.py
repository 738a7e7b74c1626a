"""One definition of each repeated block in the accelerator's Verilog, for Verilator to compile
once.

Amaranth's Verilog has a module per instance: the 16 x 8 ``sim`` machine's sixteen engine groups
are sixteen identical modules (``flexigan_top.group0`` ... ``group15``), and so are their
sub-blocks and the controller's sixteen RUN scoreboards. Verilator compiles and evaluates each
copy as its own code: 5 MB of machine code run straight through every cycle, which does not fit
the processor's caches and made the model run at about 5,000 cycles/s.

:func:`share_modules` merges the modules that are the same but for their names (and the names
Yosys generates inside them, ``\\$1``, ``\\port$57893$0``...: a renaming in order of first use,
so two modules merge only when one is the other renamed), and names the large blocks that are
instantiated more than once (:data:`SHARED_BYTES`, when their copies are many:
:data:`SHARED_TOTAL`): a build marks those ``hier_block`` in
Verilator's control file, so each is verilated and compiled once and evaluated for all its
instances (Verilator's hierarchical verilation). The design's behaviour is unchanged: only names
internal to a module are renamed, never a port of the top module.
"""

import re
from collections import Counter

__all__ = ["SHARED_BYTES", "SHARED_TOTAL", "share_modules"]

#: The Verilog size (of a module with what it instantiates) from which a repeated module is
#: built once for all its instances: the engine group (about 350 KB) and the RUN scoreboard
#: (96 KB) are; small repeated blocks (a lane's 2 KB, a crossbar slice's 5 KB) stay inlined in
#: their parents, where a call across the block boundary would cost more than their code.
SHARED_BYTES = 64 * 1024
#: The Verilog of all the copies of those modules from which they are built once: below it the
#: flat model fits the caches well enough that the calls across the blocks' boundaries cost more
#: than they save. Measured with a C++ driver (docs/user-guide.md, "RTL simulation"): 2 x 8,
#: 0.9 MB of copies, the DCGAN-32-style generator: 93,000 cycles/s flat, 68,000 shared; 8 x 8,
#: 3.8 MB, the digits generator: 32,000 flat, 26,000 shared; 16 x 8, 7.5 MB: 5,400 flat,
#: 14,300 shared.
SHARED_TOTAL = 5 * 1024 * 1024

_MODULE = re.compile(r"^module (\S+) ?\(.*?^endmodule\n", re.MULTILINE | re.DOTALL)
#: An instance's first line: ``  <module> <instance> (`` (escaped names end in a space).
_INSTANCE = re.compile(r"^(\s*)(\S+) +(\S+ +)?\($")
#: A named connection's port: ``    .<port>(``.
_CONNECTION = re.compile(r"^(\s*\.)(\S+ ?)\(")
#: A module's header: its name and its ports.
_HEADER = re.compile(r"module \S+ ?\((.*?)\);", re.DOTALL)
#: A name Yosys generated (an escaped identifier with a ``$``), with its terminating space.
_GENERATED = re.compile(r"\\[^\s]*\$[^\s]* ")


def share_modules(text, top):
    """``text`` (Yosys's Verilog of a design whose top module is ``top``) with identical modules
    merged into one, and the names of the merged modules to build once (see the module's
    docstring). ``top`` keeps every name.

    Returns
    -------
    (str, list of str)
        The Verilog, and the plain names of the modules of at least :data:`SHARED_BYTES` that
        are instantiated more than once (renamed from their escaped names, which Verilator's
        hierarchical build cannot use); ``text`` itself and no names when the copies of those
        modules come to less than :data:`SHARED_TOTAL`.
    """
    modules = {found[1]: found[0] for found in _MODULE.finditer(text)}
    merged = _Merger(modules, top)
    for name in modules:
        merged.representative(name)
    kept = merged.kept
    children = {name: [child for child in _children(body) if child in kept]
                for name, body in kept.items()}
    uses = Counter(child for name in kept for child in children[name])

    def size(name):
        return len(kept[name]) + sum(size(child) for child in children[name])

    shared = [name for name in kept if uses[name] > 1 and size(name) >= SHARED_BYTES]
    if sum(uses[name] * size(name) for name in shared) < SHARED_TOTAL:
        return text, []
    out = "".join(kept[name] for name in modules if name in kept)
    plain = []
    for name in shared:
        new = re.sub(r"\W", "_", name.lstrip("\\"))
        out = re.sub(rf"(?m)^(module |\s*){re.escape(name)} ", rf"\g<1>{new} ", out)
        plain.append(new)
    return out, plain


def _children(body):
    return [found[2] for found in map(_INSTANCE.match, body.split("\n")) if found]


class _Merger:
    """Modules merged bottom-up: a module's canonical text has its generated names renamed in
    order of first use, its instances naming their children's representatives, and its own
    name left out; modules with the same canonical text share the first one's definition."""

    def __init__(self, modules, top):
        self.modules, self.top = modules, top
        self.renamed = {}           # module -> its generated names' new names
        self.merged = {}            # module -> representative
        self.canonical = {}         # canonical text -> representative
        self.kept = {}              # representative -> its text

    def representative(self, name):
        if name in self.merged:
            return self.merged[name]
        body = self.modules[name]
        names = {}
        for token in _GENERATED.findall(body):
            if token not in names and token[:-1] not in self.modules and name != self.top:
                names[token] = f"flexigan_n{len(names)} "
        self.renamed[name] = names

        def local(line):
            return _GENERATED.sub(lambda found: names.get(found[0], found[0]), line)

        lines = body.split("\n")
        child = None
        for k, line in enumerate(lines):
            instance = _INSTANCE.match(line)
            if instance and instance[2] in self.modules:
                child = instance[2]
                lines[k] = f"{instance[1]}{self.representative(child)} {local(instance[3] or '')}("
                continue
            port = _CONNECTION.match(line) if child else None
            if port:        # the child's port, by the child's renaming
                lines[k] = (f"{port[1]}{self.renamed[child].get(port[2], port[2])}("
                            f"{local(line[port.end():])}")
                continue
            if line.strip() == ");":
                child = None
            lines[k] = local(line)
        text = "\n".join(lines)
        # Instances connect ports by name, so the order of the header's ports does not count.
        header = _HEADER.match(text)
        ports = sorted(port.strip() for port in header[1].split(","))
        canonical = f"module ({', '.join(ports)});{text[header.end():]}"
        if canonical not in self.canonical:
            self.canonical[canonical] = name
            self.kept[name] = text
        self.merged[name] = self.canonical[canonical]
        return self.merged[name]
