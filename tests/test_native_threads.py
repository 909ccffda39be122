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
