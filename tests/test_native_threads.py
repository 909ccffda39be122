"""Each bound native function runs under its own thread plan, although the BLAS's
thread count is one setting of the whole process: binding the evaluation (two
threads for 1,000 examples) must not leave a tiny training step on two threads."""
from netc.runtime import threads


class Lib:  # stands for a loaded object: only its identity matters here
    pass


def test_a_call_reapplies_its_plan_only_after_another_ran(monkeypatch):
    applied = []
    monkeypatch.setattr(threads, "setup", lambda lib, plan: applied.append(plan.blas_threads) or plan)
    one = threads.ThreadPlan(1, 1, 1, "tiny step")
    two = threads.ThreadPlan(2, 2, 1, "evaluation")
    lib = Lib()
    step = threads.Pinned(lambda: "step", lib, one)  # bound (set up) first
    evaluate = threads.Pinned(lambda: "evaluate", lib, two)  # bound last: its plan is in force
    assert [step(), step()] == ["step", "step"]
    assert applied == [1]  # the step put its own plan back once, not at every call
    assert evaluate() == "evaluate" and applied == [1, 2]
    assert step() == "step" and applied == [1, 2, 1]
    assert step() == "step" and applied == [1, 2, 1]


def test_small_steps_stay_on_one_thread_large_ones_do_not():
    assert threads.decide(None, step_flops=9e6, env={}, busy=0).blas_threads == 1  # digits, B = 200
    assert threads.decide(None, step_flops=5e8, env={}, busy=0).blas_threads == threads.available_cores()


def test_a_background_compile_uses_the_cache_folder_of_its_request(tmp_path, monkeypatch):
    """The compile runs later on a pool thread: it must not follow NETC_CACHE_DIR
    changed in between (by another test, or a caller that set it for one model)."""
    import threading
    from netc.compiler import native_function
    from netc.runtime import native_build
    gate, seen = threading.Event(), []

    def load(c_text, name, flags=None, folder=None):
        gate.wait(10)
        seen.append(folder)

    monkeypatch.setattr(native_build, "load", load)
    monkeypatch.setenv("NETC_CACHE_DIR", str(tmp_path / "first"))

    class F:
        _future = None
    f = F()
    native_function.start_shared([f], "int x;", "t")
    monkeypatch.setenv("NETC_CACHE_DIR", str(tmp_path / "second"))
    gate.set()
    f._future.result(10)
    assert seen == [tmp_path / "first"]
