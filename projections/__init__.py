"""The read side: views built from the ledger, exactly once.

A :class:`~projections.view.View` turns ledger entries into rows of its own tables; the
:class:`~projections.runner.Projector` feeds every view the entries it has not seen yet
and commits each view's rows together with its tracking position, so a crash anywhere
resumes without losing or repeating an entry. Views copy PHI from the ledger as it is
stored -- sealed tokens under the patient's data key -- and never hold a key: building
or rebuilding a view needs no secrets and never fails on a crypto-shredded patient.
"""
