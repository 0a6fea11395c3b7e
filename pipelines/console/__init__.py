"""The console of ``cosmos run`` / ``selftrain`` / ``benchmark``: one line per stage, not 600.

Why: kfp.local echoes every task's executor input, and nnU-Net prints its citation banner and plan
dumps, so a run used to print ~660 lines with no single view of where it stands. The pipeline's
stages describe themselves in structured events (:mod:`cosmos.events`); this package reads them.

* :mod:`.router`: attributes each task output line to its stage (by the thread kfp.local prints it
  in), writes ``OUT/logs/<stage>.log``, and keeps each stage's state, time, progress and problem
  from the stage's events.
* :mod:`.kfp_lines`: the one place that recognises kfp.local's own lines (task started, finished,
  cache hit, skipped), which kfp prints as text and nothing else reports.
* :mod:`.plan`: the compiled pipeline's tasks, the view's waiting rows.
* :mod:`.views`: which view (:func:`~.views.choose_mode`), and the plain stage lines for pods and CI;
  :mod:`.live`: the terminal's live table (rich); :mod:`.base`: the view interface both implement.
"""
