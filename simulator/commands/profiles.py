"""`mcelsim profiles {list,show,validate,plot}`: inspect memory technology profiles.

list      built-in profiles, one line each
show      everything about one profile (sources, provenance, knob, rates at a few points or
          at --at VALUE)
validate  check a user's TOML file (exit 2 with the file, field and fix if it is wrong)
plot      p01 / p10 / stuck-at / BER vs knob on a log axis, one PNG per profile
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("profiles", help="list, show, validate and plot memory profiles",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    sub.required = True

    q = sub.add_parser("list", help="built-in profiles")
    q.add_argument("--json", action="store_true", help="print JSON")

    q = sub.add_parser("show", help="one profile in full")
    q.add_argument("name", metavar="NAME", help="built-in name or path to a .toml file")
    q.add_argument("--at", type=float, default=None, metavar="VALUE",
                   help="knob value to evaluate the rates at (in the knob's unit)")
    q.add_argument("--clamp", action="store_true",
                   help="clamp --at into the knob's valid range instead of failing")
    q.add_argument("--json", action="store_true", help="print JSON")

    q = sub.add_parser("validate", help="check a profile file")
    q.add_argument("file", metavar="FILE", help="path to a .toml profile")
    q.add_argument("--json", action="store_true", help="print JSON")

    q = sub.add_parser("plot", help="rates vs knob, one PNG per profile")
    q.add_argument("names", nargs="+", metavar="NAME", help="built-in names or .toml paths")
    q.add_argument("--out", metavar="DIR", required=True, help="output folder")
    q.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return {"list": _list, "show": _show, "validate": _validate, "plot": _plot}[args.action](args)


def _emit(obj, as_json: bool, text: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")


def _knob_text(prof) -> str:
    k = prof.knob
    return (f"{k.name} [{k.min:g}, {k.max:g}] {k.unit}, nominal {k.nominal:g}, "
            f"harsher = {k.harsher}")


def _list(args) -> int:
    from memory_models import list_profiles, load_profile

    rows = []
    for name in list_profiles():
        prof = load_profile(name)
        rows.append({"name": name, "technology": prof.technology,
                     "knob": prof.knob.name, "unit": prof.knob.unit,
                     "min": prof.knob.min, "max": prof.knob.max, "nominal": prof.knob.nominal,
                     "illustrative": prof.illustrative})
    w = max(len(r["name"]) for r in rows)
    lines = [f"{'NAME':<{w}}  {'TECHNOLOGY':<10}  {'KNOB':<34}  ILLUSTRATIVE"]
    for r in rows:
        knob = f"{r['knob']} {r['min']:g}..{r['max']:g} {r['unit']}"
        lines.append(f"{r['name']:<{w}}  {r['technology']:<10}  {knob:<34}  "
                     f"{'yes' if r['illustrative'] else 'no'}")
    _emit(rows, args.json, "\n".join(lines))
    return 0


def _sweep_points(prof, n: int = 7) -> list[float]:
    import numpy as np

    k = prof.knob
    harsh = k.min if k.harsher == "lower" else k.max
    pts = np.linspace(k.nominal, harsh, n)
    return [float(f"{x:.6g}") for x in pts]


def _show(args) -> int:
    from memory_models import load_profile

    prof = load_profile(args.name)
    d = prof.to_dict()
    d["digest"] = prof.digest
    d["illustrative_parts"] = prof.illustrative_parts()
    points = [args.at] if args.at is not None else _sweep_points(prof)
    table = []
    for x in points:
        xr = prof.check_knob(x, clamp=args.clamp)
        r = prof.rates(xr)
        row = {"knob": xr, **r.to_dict(), "energy": prof.energy(xr)}
        table.append(row)
    d["rates"] = table
    lines = [f"{prof.name}  ({prof.technology})", prof.description, ""]
    parts = prof.illustrative_parts()
    if prof.illustrative:
        lines.append(f"ILLUSTRATIVE: not (only) measured data -- illustrative parts: "
                     f"{', '.join(parts) or 'whole profile'}")
    elif parts:
        lines.append(f"measured/fitted rates; illustrative assumptions: {', '.join(parts)}")
    else:
        lines.append("measured/fitted rates (see provenance below)")
    lines.append("sources:")
    lines += [f"  - {s}" for s in prof.sources]
    if prof.notes:
        lines.append("notes:")
        lines += [f"  - {s}" for s in prof.notes]
    lines.append(f"knob: {_knob_text(prof)}")
    for name, c in prof.curves:
        prov = sorted(set(c.provenance))
        if c.form == "table":
            how = f"table ({len(c.knob)} points, {c.interpolation})"
        else:
            how = c.form + " " + ", ".join(f"{a}={b:g}" for a, b in c.params)
        note = f"  -- {c.note}" if c.note else ""
        lines.append(f"{name}: {how}; provenance: {'/'.join(prov)}{note}")
    lines.append(f"persistent fraction: {prof.persistent_fraction:g} "
                 f"({prof.persistence_provenance}); stuck-at cells are always persistent")
    s = prof.spatial
    lines.append("spatial: i.i.d." if s.mode == "iid" else
                 f"spatial: {s.mode}-correlated, {s.weak_fraction:g} of lines weak carrying "
                 f"{s.weak_share:g} of the faults ({s.provenance})")
    o = prof.organization
    lines.append(f"organization: {o.word_bits}-bit words, {o.rows} rows x {o.columns} columns")
    pol = prof.polarity
    if pol.mode != "none":
        lines.append(f"cell polarity: {pol.mode} (stripe {pol.stripe}); true cells leak 1->0 "
                     "(p10), anti cells 0->1 (p01); rates below are array averages")
    if prof.data:
        dd = dict(prof.data)
        pts = ", ".join(f"{x:g}: {b:.3g}" for x, b in zip(dd["knob"], dd["ber"]))
        lines.append(f"reference BER ({dd['provenance']}): {pts}")
    lines.append(f"digest: {prof.digest[:16]}")
    lines.append("")
    lines.append(f"{prof.knob.name + ' (' + prof.knob.unit + ')':>22}  {'p01':>10}  {'p10':>10}  "
                 f"{'sa0':>10}  {'sa1':>10}  {'BER':>10}  {'energy':>7}")
    for row in table:
        e = "-" if row["energy"] is None else f"{row['energy']:.3f}"
        lines.append(f"{row['knob']:>22g}  {row['p01']:>10.3g}  {row['p10']:>10.3g}  "
                     f"{row['sa0']:>10.3g}  {row['sa1']:>10.3g}  {row['ber']:>10.3g}  {e:>7}")
    _emit(d, args.json, "\n".join(lines))
    return 0


def _validate(args) -> int:
    from memory_models import load_profile

    prof = load_profile(args.file)
    msg = (f"{args.file}: OK -- profile '{prof.name}' ({prof.technology}), knob "
           f"{_knob_text(prof)}" + ("; illustrative" if prof.illustrative else ""))
    _emit({"file": str(args.file), "ok": True, "name": prof.name, "digest": prof.digest,
           "illustrative": prof.illustrative}, args.json, msg)
    return 0


def _plot(args) -> int:
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from memory_models import load_profile
    from memory_models.usererror import UserInputError

    profiles = [load_profile(n) for n in args.names]
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserInputError(out, "--out", "exists and is not a folder", "pass a folder name")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(out, "--out", f"cannot create the folder ({err.strerror})",
                             "pick a writable location") from None
    files = []
    for prof in profiles:
        k = prof.knob
        logx = k.min > 0 and k.max / k.min >= 100  # knobs spanning decades (cycles, ...)
        x = np.geomspace(k.min, k.max, 400) if logx else np.linspace(k.min, k.max, 400)
        rates = [prof.rates(v) for v in x]
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for key, style in (("p01", "-"), ("p10", "--"), ("sa0", ":"), ("sa1", "-."),
                           ("ber", "-")):
            y = np.array([getattr(r, key) for r in rates])
            if key in ("sa0", "sa1") and not np.any(y > 0):
                continue
            lw = 2.5 if key == "ber" else 1.5
            label = key.upper() if key == "ber" else key
            y = np.where(y > 0, y, np.nan)  # zero has no place on a log axis
            ax.plot(x, y, style, lw=lw, label=label)
        if prof.data:
            dd = dict(prof.data)
            kx, ber = np.array(dd["knob"]), np.array(dd["ber"])
            ok = ber > 0
            ax.plot(kx[ok], ber[ok], "ko", ms=4, label=f"data ({dd['provenance']})")
        ax.set_yscale("log")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(f"{k.name} ({k.unit})")
        ax.set_ylabel("probability per bit")
        title = prof.name + ("  [illustrative]" if prof.illustrative else "")
        ax.set_title(title)
        ax.axvline(k.nominal, color="grey", lw=0.8, ls=":")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"{prof.name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(str(path))
    _emit({"files": files}, args.json, "\n".join(f"wrote {f}" for f in files))
    return 0
