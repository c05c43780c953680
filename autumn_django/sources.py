"""Which models are Autumn customers, and how each one becomes a customer.

A *customer source* is a class that names a model and says, for one of its
objects, the customer id, the customer's fields and whether it is billed at
all; the sync engine, the receivers, ``autumn_sync`` and the admin work from
the registered sources, never from the user model by name.

The site lists its sources in one setting, ``AUTUMN["CUSTOMER_SOURCES"]``
(dotted paths of :class:`CustomerSource` subclasses), read here once and
checked by the system checks. The default is the user model alone, mapped by
``CUSTOMER_ID``, ``CUSTOMER_DATA`` and ``SHOULD_SYNC`` as before, so a site
that changes nothing sees nothing change. dj-stripe's ``subscriber model``
setting names one model; a list of classes lets users and teams both be
billed, each with its own mapping, and keeps that mapping beside the model
it describes rather than in settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from django.apps import apps
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.signals import setting_changed
from django.db import models
from django.dispatch import receiver
from django.utils.module_loading import import_string

from . import conf
from .exceptions import AutumnImproperlyConfigured

__all__ = [
    "CustomerSource",
    "Dependency",
    "Registry",
    "UserSource",
    "default_customer_data",
    "default_customer_id",
    "registry",
]

#: ``CUSTOMER_SOURCES`` when the site does not set it: its users, mapped by
#: ``CUSTOMER_ID``, ``CUSTOMER_DATA`` and ``SHOULD_SYNC``.
DEFAULT_SOURCES = ("autumn_django.sources.UserSource",)


@dataclass(frozen=True)
class Dependency:
    """Changes to another model that change some customers' data: a user's
    email re-syncs the teams the user owns, a membership the team it is in.

    ``model`` is the model (or ``"app_label.Model"``) whose saves and deletes
    matter; ``customers`` gives, for one of its objects, the source objects
    to re-sync (a queryset or any iterable). With ``fields``, a save that
    names its ``update_fields`` and touches none of them is ignored (a
    user's ``last_login`` update on every login costs nothing). For a
    many-to-many ``through`` model, ``.add()``, ``.remove()`` and
    ``.clear()`` re-sync the objects on either side that are customers;
    ``customers`` may then be left out.
    """

    model: str | type[models.Model]
    customers: Callable[[Any], Iterable[Any]] | None = None
    fields: Collection[str] | None = None

    def concerns(self, update_fields: Collection[str] | None) -> bool:
        """A save with these ``update_fields`` may change what ``customers`` read."""
        return self.fields is None or update_fields is None or not set(update_fields).isdisjoint(self.fields)


class CustomerSource:
    """How the objects of one model become Autumn customers.

    Subclass it, set :attr:`model`, override what differs from the defaults
    and list the class in ``AUTUMN["CUSTOMER_SOURCES"]``. The methods are the
    site's code: whatever they raise or return that Autumn would refuse
    fails that object's mirror row with a message naming the method, never
    the save that triggered it.
    """

    #: The model, or its ``"app_label.ModelName"``.
    model: ClassVar[str | type[models.Model]]
    #: Put before the primary key in the default customer id (``team:42``),
    #: so that ids of different models never meet; the model's name when None.
    id_prefix: ClassVar[str | None] = None
    #: Other models whose changes re-sync some of this model's customers.
    depends_on: ClassVar[Sequence[Dependency]] = ()
    #: Date fields that say an object changed, for ``autumn_sync --since``
    #: (beside its mirror row's own changes).
    changed_fields: ClassVar[Sequence[str]] = ()

    def customer_id(self, obj: Any) -> str:
        """The customer id at Autumn: ``"<id_prefix>:<pk>"`` (a UUID key in
        its usual form, however it was given)."""
        return f"{self.prefix}:{obj._meta.pk.to_python(obj.pk)}"

    def customer_data(self, obj: Any) -> dict[str, Any]:
        """The customer's fields: ``name``, ``email``, ``fingerprint``,
        ``metadata`` (any subset). By default the object's text as the name,
        and the model and primary key in metadata."""
        pk = obj.pk if isinstance(obj.pk, int) else str(obj.pk)
        return {"name": str(obj)[:255] or None, "metadata": {"django_model": self.label, "django_id": pk}}

    def should_sync(self, obj: Any) -> bool:
        """Whether ``obj`` is billed: a customer is made for it, and deleted
        (or kept, by ``DELETE_POLICY``) once it stops being one."""
        return True

    def get_queryset(self) -> models.QuerySet[Any]:
        """What ``autumn_sync`` walks and a sync reads an object from; add
        the ``select_related`` that ``customer_data`` needs here."""
        return self.model_class._default_manager.all()

    # --- what the engine reads --------------------------------------------------

    @property
    def model_class(self) -> type[models.Model]:
        model = self.model
        if isinstance(model, str):
            return apps.get_model(model)
        return model

    @property
    def label(self) -> str:
        """``app_label.modelname``, as Django's ``_meta.label_lower``."""
        return self.model_class._meta.label_lower

    @property
    def prefix(self) -> str:
        return self.id_prefix or self.model_class._meta.model_name or self.label

    def function_name(self, function: str) -> str:
        """How an error names one of the mapping methods."""
        return f"{type(self).__qualname__}.{function}"

    def describe(self, obj: Any) -> str:
        """The object, as a message names it: ``team 42``."""
        return f"{self.model_class._meta.verbose_name} {getattr(obj, 'pk', obj)}"

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} for {self.model}>"


def default_customer_id(user: Any) -> str:
    return str(user.pk)


def default_customer_data(user: Any) -> dict[str, Any]:
    """The full name (or the username), the email, and the user's pk in metadata.

    Works with custom user models: ``get_full_name`` and the email field are
    used only where the model has them.
    """
    get_full_name = getattr(user, "get_full_name", None)
    name = (get_full_name() if callable(get_full_name) else "") or user.get_username()
    email_field = user.get_email_field_name() if hasattr(user, "get_email_field_name") else "email"
    email = getattr(user, email_field, None) or None
    pk = user.pk if isinstance(user.pk, int) else str(user.pk)
    return {"name": name or None, "email": email, "metadata": {"django_user_id": pk}}


class UserSource(CustomerSource):
    """The user model, mapped by the settings ``CUSTOMER_ID``,
    ``CUSTOMER_DATA`` and ``SHOULD_SYNC`` (the ids are the bare primary
    keys, as before sources existed)."""

    model = django_settings.AUTH_USER_MODEL
    changed_fields = ("date_joined", "last_login")

    @property
    def model_class(self) -> type[models.Model]:
        return get_user_model()

    def customer_id(self, obj: Any) -> str:
        return (conf.load().customer_id or default_customer_id)(obj)

    def customer_data(self, obj: Any) -> dict[str, Any]:
        return (conf.load().customer_data or default_customer_data)(obj)

    def should_sync(self, obj: Any) -> bool:
        function = conf.load().should_sync
        return True if function is None else function(obj)

    def function_name(self, function: str) -> str:
        return f"AUTUMN['{function.upper()}']"

    def describe(self, obj: Any) -> str:
        return f"user {getattr(obj, 'pk', obj)}"


class Registry:
    """The registered sources, and which of them each model's changes concern."""

    def __init__(self, sources: Sequence[CustomerSource]) -> None:
        self.sources = tuple(sources)
        self._by_model: dict[type[models.Model], CustomerSource] = {}
        self._by_label: dict[str, CustomerSource] = {}
        #: model -> (its source or None, the (source, dependency) pairs it feeds)
        self._watched: dict[
            type[models.Model], tuple[CustomerSource | None, list[tuple[CustomerSource, Dependency]]]
        ] = {}
        for source in self.sources:
            model = source.model_class
            self._by_model[model] = source
            self._by_label[source.label] = source
            self._watched.setdefault(model, (None, []))
            self._watched[model] = (source, self._watched[model][1])
        for source in self.sources:
            for dependency in source.depends_on:
                model = _model(dependency.model)
                own, feeds = self._watched.get(model, (None, []))
                self._watched[model] = (own, [*feeds, (source, dependency)])
        self._content_types: dict[int, CustomerSource] | None = None

    def __iter__(self) -> Any:
        return iter(self.sources)

    def __len__(self) -> int:
        return len(self.sources)

    def watching(
        self, model: type[models.Model]
    ) -> tuple[CustomerSource | None, list[tuple[CustomerSource, Dependency]]] | None:
        """What a save or delete of ``model`` (or of a proxy of it) concerns:
        None for nearly every model."""
        watched = self._watched.get(model)
        if watched is None and model._meta.proxy:
            watched = self._watched.get(model._meta.concrete_model)  # type: ignore[arg-type]
        return watched

    def senders(self) -> list[type[models.Model]]:
        """The models whose signals matter: the sources' and their
        dependencies' models, and the installed proxies of them."""
        watched = list(self._watched)
        proxies = [
            model
            for model in apps.get_models()
            if model._meta.proxy and model._meta.concrete_model in self._watched
        ]
        return watched + proxies

    def for_model(self, model: type[models.Model]) -> CustomerSource | None:
        source = self._by_model.get(model)
        if source is None and model._meta.proxy:
            source = self._by_model.get(model._meta.concrete_model)  # type: ignore[arg-type]
        return source

    def for_object(self, obj: Any) -> CustomerSource:
        source = self.for_model(type(obj))
        if source is None:
            raise AutumnImproperlyConfigured(
                f"{type(obj).__name__} is not a customer source: add a CustomerSource for it to "
                'AUTUMN["CUSTOMER_SOURCES"].'
            )
        return source

    def get(self, label: str) -> CustomerSource:
        """The source of ``"app_label.Model"`` (any case); raises with the
        labels that exist, for the command's ``--model``."""
        source = self._by_label.get(label.lower())
        if source is None:
            known = ", ".join(sorted(self._by_label)) or "none"
            raise LookupError(f"{label!r} is not a customer source (registered: {known}).")
        return source

    def for_content_type_id(self, content_type_id: int | None) -> CustomerSource | None:
        if content_type_id is None:
            return None
        if self._content_types is None:
            types = ContentType.objects.get_for_models(*self._by_model)
            self._content_types = {ct.pk: self._by_model[model] for model, ct in types.items()}
        return self._content_types.get(content_type_id)


def _model(model: str | type[models.Model]) -> type[models.Model]:
    return apps.get_model(model) if isinstance(model, str) else model


_registry: Registry | None = None
_lock = threading.Lock()


def registry() -> Registry:
    """The sources of ``AUTUMN["CUSTOMER_SOURCES"]``, built once the apps are
    ready and kept until the setting changes. Raises
    :class:`~autumn_django.exceptions.AutumnImproperlyConfigured` saying what
    to fix (the system checks report the same at start-up)."""
    global _registry
    built = _registry
    if built is None:
        with _lock:
            built = _registry
            if built is None:
                problems = source_problems()
                if problems:
                    message, hint = problems[0]
                    raise AutumnImproperlyConfigured(f'AUTUMN["CUSTOMER_SOURCES"] {message} {hint}'.strip())
                built = _registry = Registry([cls() for cls in _classes(_configured())])
    return built


@receiver(setting_changed)
def _forget(*, setting: str, **kwargs: Any) -> None:
    global _registry
    if setting in ("AUTUMN", "AUTH_USER_MODEL"):
        _registry = None


def _configured() -> Sequence[Any]:
    value = conf.merged().get("CUSTOMER_SOURCES")
    return DEFAULT_SOURCES if value is None else value


def _classes(entries: Sequence[Any]) -> list[type[CustomerSource]]:
    return [import_string(entry) if isinstance(entry, str) else entry for entry in entries]


def source_problems() -> list[tuple[str, str]]:
    """What is wrong with ``CUSTOMER_SOURCES``, as (message, hint) pairs, for
    the system checks and :func:`registry`. Never raises."""
    try:
        entries = _configured()
    except Exception:
        return []  # conf.problems() reports an unreadable AUTUMN
    if isinstance(entries, (str, bytes)) or not isinstance(entries, (list, tuple)):
        return [
            (
                f"must be a list of CustomerSource classes or their dotted paths, not {conf.show(entries)}.",
                'e.g. ["autumn_django.sources.UserSource", "teams.billing.TeamSource"].',
            )
        ]
    found: list[tuple[str, str]] = []
    seen_models: dict[str, str] = {}
    seen_prefixes: dict[str, str] = {}
    for entry in entries:
        shown = conf.show(entry)
        try:
            cls = import_string(entry) if isinstance(entry, str) else entry
        except ImportError as error:
            found.append(
                (f"lists {shown}, which cannot be imported ({error}).", "Give the full dotted path.")
            )
            continue
        except Exception as error:
            found.append((f"lists {shown}, whose import raised {type(error).__name__}: {error}.", ""))
            continue
        if not (isinstance(cls, type) and issubclass(cls, CustomerSource)):
            found.append(
                (
                    f"lists {shown}, which is not a CustomerSource subclass.",
                    "Subclass autumn_django.sources.CustomerSource.",
                )
            )
            continue
        try:
            source = cls()
            label, prefix = source.label, source.prefix
            for dependency in source.depends_on:
                _model(dependency.model)
        except AttributeError:
            found.append((f"lists {shown}, which sets no model.", 'Set model = "app_label.ModelName" on it.'))
            continue
        except (LookupError, ValueError) as error:
            found.append((f"lists {shown}, whose model or dependency is not installed ({error}).", ""))
            continue
        if label in seen_models:
            found.append((f"lists two sources for {label}: {seen_models[label]} and {shown}.", "Keep one."))
            continue
        seen_models[label] = shown
        if cls is not UserSource and not issubclass(cls, UserSource):
            if prefix in seen_prefixes:
                found.append(
                    (
                        f"gives {seen_prefixes[prefix]} and {shown} the same id prefix {prefix!r}: their "
                        "customer ids would meet.",
                        "Set id_prefix on one of them.",
                    )
                )
            seen_prefixes[prefix] = shown
    return found
