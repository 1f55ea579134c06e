"""The `cips` command (installed as cips_edge.cli; the commands are in commands/, cips_edge.commands):

    render       images, raw RGB at given points, streamed giants, foveated renders, Dask-cluster jobs
    grid         many seeds in one contact-sheet PNG
    zoom         an animation zooming into one image at full detail
    interpolate  an animation walking through several seeds (slerp in z or lerp in w)
    view         a local server: pan and zoom the model's endless image in the browser
    web          a static site whose tiles the visitor's browser renders
    info         a model's config, metadata, parameters and this machine's providers
    export       a torch checkpoint to a cips-edge ONNX file (needs torch)
    eval         SWD, FID, KID, precision/recall against a data set
    train        the paper's training recipe (needs torch)

Wiring only: each command parses its options and calls cips_edge.runtime or cips_edge.metrics
(torch-free), or cips_edge.export / cips_edge.train (imported lazily: they need torch)."""
import time

STARTED = time.perf_counter()  # first of all: `cips render --verbose` reports the start-up from here

import os  # noqa: E402
import sys  # noqa: E402

import typer  # noqa: E402

from cips_edge.commands import evaluate, export, frames, info, render, train, view  # noqa: E402

app = typer.Typer(
    help="Render CIPS images (a pixel-independent GAN, G(x, y; z)) from ONNX files; evaluate, export and train models.",
    pretty_exceptions_enable=False, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
)
app.command()(render.render)
app.command()(frames.grid)
app.command()(frames.zoom)
app.command()(frames.interpolate)
app.command()(view.view)
app.command()(view.web)
app.command()(info.info)
app.command()(export.export)
app.command("eval")(evaluate.eval_)
app.command(**train.SETTINGS)(train.train)


def main() -> None:
    """Console entry point: click's own usage errors are shortened to one line as well."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        typer.echo("aborted", err=True)
        code = 130
    except Exception as e:
        # click's exceptions (vendored inside newer typer, so matched by shape): bad option values,
        # unknown options, missing arguments. Anything else is a bug and keeps its traceback.
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
            raise
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()  # plain `cips`: the help text
        else:
            typer.echo(f"error: {e.format_message()}", err=True)
        code = e.exit_code
    code = code if isinstance(code, int) else 0
    model = sys.modules.get("cips_edge.runtime.model")
    if code == 0 and model is not None and model.session_opened():
        # the work is written (files are renamed into place before a command returns): skip the
        # interpreter's teardown of ONNX Runtime (and of the CUDA context and libraries), a sizeable part
        # of a short command (benchmarks/results/command-cpu2-64-teardown-ab.json)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    sys.exit(code)


if __name__ == "__main__":
    main()
